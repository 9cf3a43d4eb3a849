/**
 * TLS on the client side of the service: an `https://` STRATA_SERVER is verified against the system's CA roots, or —
 * with STRATA_CA_FILE set to a PEM bundle — against that bundle only (a private CA, a self-signed certificate). The
 * same agent serves `strata build`, the SDK and anything else that talks to a build server.
 */
import { readFileSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import { ConfigError } from "../errors.js";

/** A keep-alive agent for `base` (http: or https:, with STRATA_CA_FILE's CAs when set). */
export function serviceAgent(base: URL, env: NodeJS.ProcessEnv = process.env): http.Agent {
  if (base.protocol !== "https:") return new http.Agent({ keepAlive: true });
  const caFile = env.STRATA_CA_FILE?.trim();
  if (!caFile) return new https.Agent({ keepAlive: true });
  let ca: Buffer;
  try {
    ca = readFileSync(caFile);
  } catch (e) {
    throw new ConfigError(
      `STRATA_CA_FILE=${caFile}: cannot read the CA bundle (${(e as NodeJS.ErrnoException).code ?? String(e)}); ` +
        "set it to a PEM file with the certificate(s) of the CA that signed the build server's certificate",
    );
  }
  if (!ca.includes("-----BEGIN CERTIFICATE-----"))
    throw new ConfigError(`STRATA_CA_FILE=${caFile}: not a PEM file (no "-----BEGIN CERTIFICATE-----" in it)`);
  return new https.Agent({ keepAlive: true, ca });
}

const VERIFY_CODES = new Set([
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "CERT_UNTRUSTED",
]);

/** What to do about a TLS failure with this error code, or "" for a code that is not one. */
export function tlsHint(code: string | undefined): string {
  if (code === undefined) return "";
  if (VERIFY_CODES.has(code))
    return "; the server's certificate is not signed by a CA this client trusts: set STRATA_CA_FILE to the CA's PEM file";
  if (code === "ERR_TLS_CERT_ALTNAME_INVALID")
    return "; the server's certificate does not name the host in STRATA_SERVER (use a name or IP it lists)";
  if (code === "CERT_HAS_EXPIRED") return "; the server's certificate has expired: the operator must renew it";
  if (code === "EPROTO" || code === "ERR_SSL_WRONG_VERSION_NUMBER")
    return "; is the server serving TLS? (use http:// for a server without --tls-cert)";
  return "";
}
