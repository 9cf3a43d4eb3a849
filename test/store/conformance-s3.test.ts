// The Store contract against S3Store on a real s3rver (loopback, started here). Every store gets its own key
// prefix and its own empty local cache.
import { after, before } from "node:test";
import { promises as fsp } from "node:fs";
import os from "node:os";
import path from "node:path";
import { S3Store } from "../../src/store/s3/index.js";
import { startS3, type TestS3 } from "../support/s3.js";
import { storeConformance } from "../support/store-conformance.js";

let s3: TestS3;
let work: string;
let n = 0;
const stores: S3Store[] = [];

before(async () => {
  work = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-conformance-s3-"));
  s3 = await startS3();
});
after(async () => {
  for (const s of stores) s.close();
  await s3?.stop();
  await fsp.rm(work, { recursive: true, force: true });
});

storeConformance("S3Store (s3rver)", async () => {
  const i = ++n;
  const store = await S3Store.open({
    bucket: s3.bucket,
    endpoint: s3.endpoint,
    region: s3.region,
    credentials: s3.credentials,
    prefix: `conformance/${i}`,
    localRoot: path.join(work, `cache-${i}`),
    maxAttempts: 3,
    retryBaseDelayMs: 20,
  });
  stores.push(store);
  return store;
});
