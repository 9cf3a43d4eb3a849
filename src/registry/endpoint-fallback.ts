/**
 * Runs a pull-side operation against a registry's hosts in order — the mirrors its registry configuration lists,
 * then the registry itself — until one succeeds. A host that fails (unreachable, lacks the image, refuses us, answers
 * with content whose digest is wrong) is reported and the next is tried; when all fail, a RegistryHostsError lists
 * every host and why. Without mirrors the operation runs once against the registry, with its own errors.
 */
import { DigestMismatchError, FetchPolicyError } from "../errors.js";
import { defaultFetchPolicy } from "../net/fetch-policy.js";
import type { RegistryClientOptions } from "./client.js";
import { registryEndpoints, type RegistryEndpoint } from "./endpoints.js";
import { RegistryError, RegistryHostsError, UnsupportedImageError, type HostFailure } from "./errors.js";
import type { ImageReference } from "./reference.js";

/** Whether a failure on one host should move on to the next (the others are the caller's or the store's). */
function hostFailure(e: unknown): boolean {
  return (
    e instanceof RegistryError ||
    e instanceof DigestMismatchError ||
    e instanceof UnsupportedImageError ||
    e instanceof FetchPolicyError
  );
}

/**
 * Calls `fn` with each endpoint of `reference`'s registry in turn until one call succeeds. `onFallback` hears one
 * line per failed host that is followed by another.
 */
export async function withEndpoints<T>(
  reference: ImageReference,
  opts: Pick<RegistryClientOptions, "fetchPolicy" | "signal">,
  fn: (endpoint: RegistryEndpoint) => Promise<T>,
  onFallback?: (line: string) => void,
): Promise<T> {
  const policy = opts.fetchPolicy ?? defaultFetchPolicy();
  const endpoints = registryEndpoints(reference.registry, policy.registryConfig);
  if (endpoints.length === 1) return fn(endpoints[0]!);
  const failures: HostFailure[] = [];
  for (const [i, endpoint] of endpoints.entries()) {
    try {
      return await fn(endpoint);
    } catch (e) {
      if (opts.signal?.aborted || !hostFailure(e)) throw e;
      failures.push({ host: endpoint.label, error: e });
      const next = endpoints[i + 1];
      if (next) onFallback?.(`${endpoint.label} failed (${(e as Error).message.split("\n")[0]}); trying ${next.label}`);
    }
  }
  throw new RegistryHostsError(String(reference), failures);
}
