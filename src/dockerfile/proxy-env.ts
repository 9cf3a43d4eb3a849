/**
 * The proxy environment a Dockerfile RUN gets from the build args, as BuildKit gives it (dockerfile2llb's
 * `proxyEnvFromBuildArgs`, the exec op's `proxyEnvList`): every RUN, whether or not an ARG declares them, and never in
 * the cache key, the image config or its history. Pure.
 */

/** The proxy kinds, by their upper-case names. */
const PROXY_KINDS = ["ALL_PROXY", "FTP_PROXY", "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY"] as const;

/**
 * The proxy variables for the build args `given`, sorted by name: a build arg names a kind in any case
 * (`http_proxy`, `HTTP_PROXY`, `Http_Proxy`), and a kind with a non-empty value is set in both spellings
 * (`HTTP_PROXY` and `http_proxy`). Each spelling takes the build arg of exactly its name when there is one (so
 * `HTTP_PROXY=a` with `http_proxy=b` keeps both, as the legacy builder did, where BuildKit picks one of them in map
 * order; an exact one given empty leaves that spelling unset), else the last non-empty other spelling in sorted order.
 */
export function proxyEnvFromBuildArgs(given: Readonly<Record<string, string>>): [string, string][] {
  const names = Object.keys(given).sort();
  const out: [string, string][] = [];
  for (const kind of PROXY_KINDS) {
    let any = "";
    for (const n of names) if (n.toUpperCase() === kind && given[n] !== "") any = given[n]!;
    if (any === "") continue;
    for (const spelling of [kind, kind.toLowerCase()]) {
      const value = Object.hasOwn(given, spelling) ? given[spelling]! : any;
      if (value !== "") out.push([spelling, value]);
    }
  }
  return out.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}
