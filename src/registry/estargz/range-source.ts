/**
 * Random access to a blob, for the eStargz reader: a registry blob (`registrySource`, one single-range GET per
 * request — S3 and GCS refuse multi-range requests), a file, or a buffer.
 */
import { promises as fsp } from "node:fs";
import type { Descriptor } from "../../oci/types.js";
import type { RegistryClient } from "../client.js";
import { RegistryError, UnsupportedImageError } from "../errors.js";
import { discard, displayUrl, errorFromResponse, readBody } from "../http.js";

/** Random access to a blob. */
export interface RangeSource {
  /** Total size of the blob in bytes. */
  readonly size: number;
  /** Bytes `[start, end)` of the blob (exactly `end - start` of them). */
  read(start: number, end: number): Promise<Buffer>;
  /** Bytes transferred so far (for a registry: response body bytes). */
  readonly bytesRead: number;
}

/** A blob in memory. */
export function bufferSource(blob: Buffer): RangeSource {
  let n = 0;
  return {
    size: blob.length,
    get bytesRead() {
      return n;
    },
    async read(start, end) {
      checkRange(start, end, blob.length);
      n += end - start;
      return blob.subarray(start, end);
    },
  };
}

/** A blob on local disk. */
export async function fileSource(file: string): Promise<RangeSource> {
  const size = (await fsp.stat(file)).size;
  let n = 0;
  return {
    size,
    get bytesRead() {
      return n;
    },
    async read(start, end) {
      checkRange(start, end, size);
      const fh = await fsp.open(file, "r");
      try {
        const buf = Buffer.alloc(end - start);
        let got = 0;
        while (got < buf.length) {
          const { bytesRead } = await fh.read(buf, got, buf.length - got, start + got);
          if (bytesRead === 0) throw new UnsupportedImageError(`${file} is shorter than ${size} bytes`);
          got += bytesRead;
        }
        n += buf.length;
        return buf;
      } finally {
        await fh.close();
      }
    },
  };
}

function checkRange(start: number, end: number, size: number): void {
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end > size || start >= end)
    throw new RangeError(`invalid range [${start}, ${end}) of a ${size}-byte blob`);
}

/**
 * A registry blob read with `Range: bytes=a-b` GETs through the client (auth, redirects without Authorization across
 * origins, `Accept-Encoding: identity`, retries). A 206 must name exactly the range asked for; a 200 is accepted only
 * for a request covering the whole blob.
 */
export function registrySource(client: RegistryClient, d: Descriptor): RangeSource {
  let n = 0;
  const where = `layer ${d.digest} of ${client.reference}`;
  return {
    size: d.size,
    get bytesRead() {
      return n;
    },
    async read(start, end) {
      checkRange(start, end, d.size);
      const whole = start === 0 && end === d.size;
      return client.withRetries(async () => {
        const { res, url } = await client.fetch(client.url("blobs", d.digest), { range: `bytes=${start}-${end - 1}` });
        if (res.status === 416) {
          await discard(res); // 2.8.2's 416 announces a Content-Length it never sends
          throw new RegistryError(
            `${where}: ${displayUrl(url)} refused the range ${start}-${end - 1} (416); the blob is shorter than its descriptor says`,
            { status: 416, url: displayUrl(url) },
          );
        }
        if (!res.ok)
          throw await errorFromResponse(
            res,
            url,
            `${where} (bytes ${start}-${end - 1})`,
            `the registry does not have the blob ${d.digest}`,
          );
        const encoding = res.headers.get("content-encoding");
        if (encoding && encoding.toLowerCase() !== "identity") {
          await discard(res);
          throw new RegistryError(
            `${where} was served with Content-Encoding: ${encoding} despite Accept-Encoding: identity; ranges of it cannot be used`,
            { status: res.status, url: displayUrl(url) },
          );
        }
        if (res.status === 200 && !whole) {
          await discard(res);
          throw new RegistryError(
            `${where}: ${displayUrl(url)} ignored the Range header (200 instead of 206); eStargz lazy pulls need a registry that serves byte ranges`,
            { status: 200, url: displayUrl(url) },
          );
        }
        if (res.status === 206) {
          const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec((res.headers.get("content-range") ?? "").trim());
          if (!m || Number(m[1]) !== start || Number(m[2]) !== end - 1 || (m[3] !== "*" && Number(m[3]) !== d.size)) {
            await discard(res);
            throw new RegistryError(
              `${where}: asked for bytes ${start}-${end - 1}, got Content-Range ${JSON.stringify(res.headers.get("content-range"))}`,
              { status: 206, url: displayUrl(url), temporary: true },
            );
          }
        }
        const body = await readBody(res, end - start, `${where} (bytes ${start}-${end - 1})`);
        n += body.length;
        if (body.length !== end - start) {
          throw new RegistryError(
            `${where}: got ${body.length} of the ${end - start} bytes asked for (${start}-${end - 1})`,
            { url: displayUrl(url), temporary: true },
          );
        }
        return body;
      });
    },
  };
}
