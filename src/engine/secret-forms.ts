/**
 * The forms a secret value takes when a build step prints it without effort, for redaction: the value itself, its
 * base64 (standard and URL-safe, padded or not, at each of the three byte alignments it can have inside a longer
 * encoded message), its URL encodings, hex, JSON escaping, each line of a multi-line value, and the 76-column lines
 * of GNU `base64`. Pure.
 *
 * - Inside a longer message, base64 characters at the value's edges mix its bits with its neighbours'; only the
 *   characters made of the value's bits alone are stable, so those (the "core" at each alignment) are what is
 *   replaced. An edge character left beside `***` carries at most 4 of the value's bits.
 * - Values under {@link MIN_ENCODED_BYTES} bytes get no encoded forms: their forms are 4–5 characters that occur by
 *   chance in any base64 or hex output, and a value that short is guessable whatever the log shows. A 3-byte value
 *   is still redacted as itself; 1–2 byte values are not redacted at all (they would blank every word).
 */

/** The shortest value redacted as itself. */
export const MIN_RAW_CHARS = 3;
/** The shortest value (in UTF-8 bytes) whose encoded forms are redacted too. */
export const MIN_ENCODED_BYTES = 4;
/** The shortest line of a multi-line value redacted on its own. */
const MIN_LINE_CHARS = 8;
/** GNU base64 wraps its output at this many columns. */
const BASE64_WRAP = 76;

/** Every form of `value` to redact (deduplicated, each at least 4 characters; none for values under 3 characters). */
export function secretForms(value: string): string[] {
  if (value.length < MIN_RAW_CHARS) return [];
  const out = new Set<string>([value]);
  const bytes = Buffer.from(value, "utf8");
  if (bytes.length >= MIN_ENCODED_BYTES) {
    for (const f of encodedForms(bytes, value)) if (f.length >= MIN_ENCODED_BYTES) out.add(f);
  }
  // Logs arrive line by line: a multi-line value (a PEM key) is never whole in one line.
  const lines = value.split(/\r?\n/);
  if (lines.length > 1) {
    for (const l of lines) {
      const t = l.trim();
      if (t.length >= MIN_LINE_CHARS) out.add(t);
    }
  }
  return [...out];
}

function encodedForms(bytes: Buffer, value: string): string[] {
  const out: string[] = [];
  const urlSafe = (s: string) => s.replace(/\+/g, "-").replace(/\//g, "_");
  // Whole encodings (the value alone, or with `echo`'s newline) win over their cores, so nothing is left beside `***`.
  for (const whole of [bytes, Buffer.concat([bytes, Buffer.from("\n")])]) {
    const b64 = whole.toString("base64");
    out.push(b64, b64.replace(/=+$/, ""), urlSafe(b64), urlSafe(b64).replace(/=+$/, ""));
    const lines = b64.length > BASE64_WRAP ? (b64.match(new RegExp(`.{1,${BASE64_WRAP}}`, "g")) ?? []) : [];
    for (const l of lines) if (l.length >= MIN_LINE_CHARS) out.push(l);
  }
  for (const core of base64Cores(bytes)) out.push(core, urlSafe(core));
  const hex = bytes.toString("hex");
  const pct = (h: string) => h.replace(/../g, (b) => `%${b}`);
  out.push(
    encodeURIComponent(value),
    encodeURI(value),
    new URLSearchParams({ v: value }).toString().slice(2),
    pct(hex),
    pct(hex.toUpperCase()),
    hex,
    hex.toUpperCase(),
    JSON.stringify(value).slice(1, -1),
  );
  return out.filter((f) => f !== value);
}

/**
 * The base64 characters made of the value's bits alone, for each alignment of the value within the encoded bytes
 * (0, 1 or 2 bytes after a 3-byte group starts).
 */
export function base64Cores(bytes: Buffer): string[] {
  const n = bytes.length;
  const out: string[] = [];
  for (const offset of [0, 1, 2]) {
    const enc = Buffer.concat([Buffer.alloc(offset), bytes]).toString("base64");
    // Character i holds bits [6i, 6i + 6); the value holds bits [8·offset, 8·(offset + n)).
    const start = Math.ceil((8 * offset) / 6);
    const end = Math.floor((8 * (offset + n)) / 6);
    if (end > start) out.push(enc.slice(start, end));
  }
  return out;
}
