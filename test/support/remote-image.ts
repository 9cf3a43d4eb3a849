// Builds an Image on a build service: its plan, with its secret values beside it (as src/build.ts does).
import type { Image } from "../../src/index.js";
import { remoteBuild, type RemoteBuildOptions, type RemoteBuiltImage } from "../../src/service/client.js";

export function remoteBuildImage(image: Image, opts: RemoteBuildOptions): Promise<RemoteBuiltImage> {
  return remoteBuild(image.plan(), { secrets: image.secretValues(), ...opts });
}
