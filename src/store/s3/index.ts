/** The S3 store: blobs and records in S3, the local disk as a bounded LRU cache in front. */
export { S3Store, parseByteSize, type S3Credentials, type S3StoreOptions, type S3StoreStats } from "./s3-store.js";
export { LocalCache, type CacheEntry, type LocalCacheOptions } from "./local-cache.js";
export {
  describeS3Error,
  isS3NotFound,
  isS3Retryable,
  withS3Retry,
  DEFAULT_RETRY,
  type RetryPolicy,
  type S3Where,
} from "./errors.js";
