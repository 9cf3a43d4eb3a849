// The image endpoints' request bodies (src/service/wire/images.ts) and the client's check of an image record against
// the config and manifest it names (src/service/image-client.ts): pure.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { checkRecordContent } from "../../src/service/image-client.js";
import { parsePushRequest, parseTagRequest } from "../../src/service/wire/images.js";
import { WireError } from "../../src/service/wire/limits.js";
import type { ImageConfig, Manifest } from "../../src/oci/types.js";
import type { ImageRecord } from "../../src/store/store.js";
import type { Digest } from "../../src/util/digest.js";

const d = (c: string) => `sha256:${c.repeat(64)}` as Digest;

describe("image endpoint requests", () => {
  test("a tag request names one image id, nothing else", () => {
    assert.deepEqual(parseTagRequest({ imageId: d("a") }), { imageId: d("a") });
    assert.throws(
      () => parseTagRequest({ imageId: "abc" }),
      (e: Error) => e instanceof WireError && /imageId: expected sha256/.test(e.message),
    );
    assert.throws(() => parseTagRequest({ imageId: d("a"), name: "x" }), /unknown field "name"/);
    assert.throws(() => parseTagRequest([]), WireError);
  });

  test("a push request: image, reference, format, estargz and only the registry login as secrets", () => {
    const ok = { imageId: d("b"), reference: "127.0.0.1:5000/a/b:1", format: "docker", estargz: false };
    assert.deepEqual(parsePushRequest(ok), ok);
    assert.deepEqual(parsePushRequest({ ...ok, secrets: { REGISTRY_USERNAME: "u", REGISTRY_PASSWORD: "p" } }).secrets, {
      REGISTRY_USERNAME: "u",
      REGISTRY_PASSWORD: "p",
    });
    assert.throws(() => parsePushRequest({ ...ok, format: "v1" }), /format/);
    assert.throws(() => parsePushRequest({ ...ok, reference: "" }), /reference: empty reference/);
    assert.throws(
      () => parsePushRequest({ ...ok, secrets: { AWS_SECRET_ACCESS_KEY: "x" } }),
      /unknown field "AWS_SECRET_ACCESS_KEY"/,
    );
    assert.throws(() => parsePushRequest({ reference: "x/y" }), /imageId/);
  });
});

describe("checkRecordContent", () => {
  const layers = [
    { digest: d("1"), diffId: d("2"), size: 10, mediaType: "application/vnd.oci.image.layer.v1.tar+gzip" },
    { digest: d("3"), diffId: d("4"), size: 20, mediaType: "application/vnd.oci.image.layer.v1.tar+gzip" },
  ];
  const rec = { id: d("c"), configDigest: d("c"), manifestDigest: d("m"), layers } as unknown as ImageRecord;
  const manifest = {
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: { digest: d("c"), size: 5, mediaType: "application/vnd.oci.image.config.v1+json" },
    layers: layers.map((l) => ({ digest: l.digest, size: l.size, mediaType: l.mediaType })),
  } as unknown as Manifest;
  const config = { rootfs: { type: "layers", diff_ids: [d("2"), d("4")] } } as unknown as ImageConfig;

  test("a record that describes its config and manifest exactly passes", () => {
    checkRecordContent(rec, config, manifest);
  });

  test("a record that differs from them in any layer, size, diffID or config is refused", () => {
    const cases: [ImageRecord, ImageConfig, Manifest, RegExp][] = [
      [{ ...rec, layers: [layers[0]!] }, config, manifest, /has 1 layers where its manifest has 2/],
      [
        { ...rec, layers: [layers[0]!, { ...layers[1]!, size: 21 }] },
        config,
        manifest,
        /differs from its manifest at layer 1/,
      ],
      [{ ...rec, layers: [{ ...layers[0]!, digest: d("9") }, layers[1]!] }, config, manifest, /at layer 0/],
      [
        rec,
        { rootfs: { type: "layers", diff_ids: [d("2"), d("5")] } } as unknown as ImageConfig,
        manifest,
        /other diffIDs/,
      ],
      [rec, config, { ...manifest, config: { ...manifest.config, digest: d("e") } }, /another config/],
    ];
    for (const [r, c, m, why] of cases) assert.throws(() => checkRecordContent(r, c, m), why);
  });
});
