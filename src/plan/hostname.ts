/** The hostname a RUN's sandbox gets: BuildKit's `hostname` build option and `BUILDKIT_SANDBOX_HOSTNAME`. Pure. */

/** The hostname a RUN gets when its instruction names none. */
export const DEFAULT_HOSTNAME = "strata";

/** The build arg that sets it for a Dockerfile's RUNs, as BuildKit's (it overrides the `hostname` option). */
export const HOSTNAME_BUILD_ARG = "BUILDKIT_SANDBOX_HOSTNAME";

const LABEL = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?";
const HOSTNAME = new RegExp(`^${LABEL}(?:\\.${LABEL})*$`);

/** Whether `name` is an RFC 1123 hostname: dot-separated labels of letters, digits and inner hyphens, ≤ 253 chars. */
export function isValidHostname(name: string): boolean {
  return name.length <= 253 && HOSTNAME.test(name);
}

/** Why `name` is not a hostname, for an error that says what to do. */
export const HOSTNAME_RULE =
  "a hostname is dot-separated labels of letters, digits and inner hyphens (each at most 63, in all at most 253)";
