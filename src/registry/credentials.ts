/**
 * Picks the credential provider for a registry base from the kind of login its definition asked for:
 *
 *  - `registry` (Image.fromRegistry): undefined — the client's own chain applies (`REGISTRY_USERNAME` /
 *    `REGISTRY_PASSWORD` from the secret, else Docker's config.json, else anonymous).
 *  - `ecr` (Image.fromAwsEcr): `ecrCredentials(secret)` — AWS keys or a web identity → ECR GetAuthorizationToken.
 *  - `gcp` (Image.fromGcpArtifactRegistry): `gcpCredentials(secret)` — `SERVICE_ACCOUNT_JSON` → OAuth access token
 *    (or the `_json_key` form with `gcp.mode: "json_key"`).
 *
 * The engine passes the result as `RegistryOptions.credentials`. Missing or malformed variables throw an
 * `InvalidDefinitionError` here, before any network call.
 */
import type { CredentialProvider, SecretInput } from "./auth.js";
import { ecrCredentials, type EcrOptions } from "./ecr.js";
import { gcpCredentials, type GcpOptions } from "./gcp.js";
import { InvalidDefinitionError } from "../errors.js";

export type RegistryLoginKind = "registry" | "ecr" | "gcp";

export interface CredentialsForOptions {
  ecr?: EcrOptions;
  gcp?: GcpOptions;
}

function valuesOf(secret: SecretInput): Record<string, string> {
  const maybe = secret as { values?: unknown };
  if (typeof maybe.values === "function") return (maybe.values as () => Record<string, string>).call(secret);
  return { ...(secret as Record<string, string>) };
}

/** The credential provider for a registry login of `kind` with `secret`'s variables (undefined: the default chain). */
export function credentialsFor(
  kind: RegistryLoginKind,
  secret: SecretInput,
  opts: CredentialsForOptions = {},
): CredentialProvider | undefined {
  switch (kind) {
    case "registry":
      return undefined;
    case "ecr":
      return ecrCredentials(valuesOf(secret), opts.ecr);
    case "gcp":
      return gcpCredentials(valuesOf(secret), opts.gcp);
    default:
      throw new InvalidDefinitionError(
        `unknown registry login kind "${String(kind)}"; expected "registry", "ecr" or "gcp"`,
      );
  }
}
