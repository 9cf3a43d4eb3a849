/**
 * Picks the store the environment asks for: the S3 store when STRATA_S3_BUCKET is set, else the local store.
 * The AWS SDK is only loaded in the first case, so local builds do not pay for it at startup.
 */
import type { NamedStore } from "../store.js";

export function s3Configured(env: NodeJS.ProcessEnv = process.env): boolean {
  return Boolean(env.STRATA_S3_BUCKET);
}

export async function openStoreFromEnv(env: NodeJS.ProcessEnv = process.env): Promise<NamedStore> {
  if (s3Configured(env)) {
    const { S3Store } = await import("./s3-store.js");
    return S3Store.fromEnv(env);
  }
  const { LocalStore } = await import("../local.js");
  return LocalStore.open();
}
