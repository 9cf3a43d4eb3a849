/**
 * The proxy environment a Dockerfile RUN gets from the build args, as BuildKit gives it (dockerfile2llb's
 * `proxyEnvFromBuildArgs`, the exec op's `proxyEnvList`): every RUN, whether or not an ARG declares them, and never in
 * the cache key, the image config or its history. Pure.
 */

/** The proxy kinds, by their upper-case names. */
const PROXY_KINDS = ["ALL_PROXY", "FTP_PROXY", "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY"] as const;

/**
 * The proxy variables for the build args `given`, sorted by name: a build arg names a kind in any case
 * (`http_proxy`, `HTTP_PROXY`, `Http_Proxy`; of several, the last in sorted order wins), and a kind with a non-empty
 * value is set in both spellings (`HTTP_PROXY` and `http_proxy`).
 */
export function proxyEnvFromBuildArgs(given: Readonly<Record<string, string>>): [string, string][] {
  const names = Object.keys(given).sort();
  const out: [string, string][] = [];
  for (const kind of PROXY_KINDS) {
    let value = "";
    for (const n of names) if (n.toUpperCase() === kind) value = given[n]!;
    if (value !== "") out.push([kind, value], [kind.toLowerCase(), value]);
  }
  return out.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}
