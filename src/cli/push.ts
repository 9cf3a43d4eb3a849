/**
 * `strata push <image> <ref> [--format oci|docker] [--estargz]`: uploads a built image to a registry and prints
 * `<registry>/<repository>@<manifest digest>` on stdout; progress goes to stderr.
 *
 * Credentials: `REGISTRY_USERNAME` + `REGISTRY_PASSWORD` from the environment when set, else Docker's config.json
 * (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`), else anonymous.
 *
 * With STRATA_SERVER set and an image the build service holds, the service pushes it (no layer travels through this
 * machine); the login found here goes with the request as a secret, used for that push only and never stored.
 */
import { parseArgs } from "node:util";

const USAGE = "usage: strata push <image> <ref> [--format oci|docker] [--estargz]";

function usage(message: string): number {
  process.stderr.write(`strata push: ${message}\n${USAGE}\n`);
  return 2;
}

export async function cmdPush(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      format: { type: "string" },
      estargz: { type: "boolean" },
      quiet: { type: "boolean", short: "q" },
    },
  });
  if (positionals.length !== 2) return usage("push needs an image id and a target reference (host[:port]/repo[:tag])");
  const format = values.format ?? "oci";
  if (format !== "oci" && format !== "docker") return usage(`--format is oci or docker, not "${format}"`);
  const [imageRef, target] = positionals as [string, string];

  const secret: Record<string, string> = {};
  for (const name of ["REGISTRY_USERNAME", "REGISTRY_PASSWORD"]) {
    const v = process.env[name];
    if (v !== undefined && v !== "") secret[name] = v;
  }
  const { serviceImagesFromEnv, localImage } = await import("./image-source.js");
  const service = await serviceImagesFromEnv();
  if (service) {
    try {
      const { NotFoundError } = await import("../errors.js");
      const resolved = await service.resolve(imageRef).catch((e: unknown) => {
        if (e instanceof NotFoundError) return undefined;
        throw e;
      });
      if (resolved) return await pushOnService(service, resolved.imageId, target, format, values, secret);
    } finally {
      service.close();
    }
  }
  const { store, image } = await localImage(imageRef);

  const { pushImage } = await import("../registry/push.js");
  const started = Date.now();
  const result = await pushImage(store, image, target, {
    format,
    estargz: values.estargz === true,
    ...(Object.keys(secret).length ? { secret } : {}),
    onProgress: values.quiet ? undefined : (line) => process.stderr.write(`${line}\n`),
  });
  if (!values.quiet) {
    const counts = { uploaded: 0, mounted: 0, existing: 0 };
    for (const b of result.blobs) counts[b.how]++;
    process.stderr.write(
      `pushed ${result.reference} (${format === "oci" ? "OCI" : "Docker v2 schema 2"}): ${counts.uploaded} uploaded, ${counts.mounted} mounted, ${counts.existing} already there, in ${((Date.now() - started) / 1000).toFixed(1)} s\n`,
    );
  }
  process.stdout.write(`${result.reference.registry}/${result.reference.repository}@${result.manifestDigest}\n`);
  return 0;
}

/** Asks the build service to push an image it holds; sends the login for the target registry found here, if any. */
async function pushOnService(
  service: import("../service/image-client.js").ServiceImages,
  imageId: string,
  target: string,
  format: "oci" | "docker",
  values: { estargz?: boolean; quiet?: boolean },
  secret: Record<string, string>,
): Promise<number> {
  if (!secret.REGISTRY_USERNAME) {
    const { dockerConfigCredentials } = await import("../registry/auth.js");
    const { parseReference } = await import("../registry/reference.js");
    const creds = await dockerConfigCredentials()(parseReference(target).registry);
    if (creds) Object.assign(secret, { REGISTRY_USERNAME: creds.username, REGISTRY_PASSWORD: creds.password });
  }
  const started = Date.now();
  if (!values.quiet) process.stderr.write(`asking the build server to push ${imageId.slice(7, 19)} to ${target}\n`);
  const r = await service.push({
    imageId,
    reference: target,
    format,
    ...(values.estargz ? { estargz: true } : {}),
    ...(Object.keys(secret).length ? { secrets: secret } : {}),
  });
  if (!values.quiet)
    process.stderr.write(
      `pushed ${r.repository}:${r.tag} from the build server: ${r.blobs.uploaded} uploaded, ${r.blobs.mounted} mounted, ${r.blobs.existing} already there, in ${((Date.now() - started) / 1000).toFixed(1)} s\n`,
    );
  process.stdout.write(`${r.repository}@${r.manifestDigest}\n`);
  return 0;
}
