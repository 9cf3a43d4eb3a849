// Images the ported BuildKit tests push to the harness's loopback registry: a built result under a name (BuildKit's
// `push=true` image exporter), and the stand-in for Docker Hub's `alpine` that some BuildKit tests start from.
import type { BkResult, BuildkitHarness } from "./harness.js";
import { pushImage } from "../../../src/registry/push.js";

/** Pushes a built result to the harness's registry as `<registry>/<name>` (e.g. `buildkit/testonbuild:base`). */
export async function pushResult(bk: BuildkitHarness, r: BkResult, name: string): Promise<string> {
  const ref = `${bk.registryHost}/${name}`;
  const rec = await bk.store.getImage(r.built.imageId);
  if (!rec) throw new Error(`image ${r.built.imageId} is not in the store`);
  await pushImage(bk.store, rec, ref, { dockerConfig: false });
  return ref;
}

/**
 * Docker Hub's `alpine` stands in as busybox plus `/etc/alpine-release` (what BuildKit's tests read from alpine), pushed
 * as `<registry>/library/alpine:latest`; returns that reference. The tests that use `alpine` use nothing else of it.
 */
export async function pushAlpine(bk: BuildkitHarness): Promise<string> {
  const r = await bk.build({ dockerfile: "FROM busybox\nRUN echo 3.20.3 > /etc/alpine-release\n" });
  return pushResult(bk, r, "library/alpine:latest");
}
