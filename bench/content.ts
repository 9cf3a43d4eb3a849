// Deterministic content for the benchmarks: a seeded PRNG, source-like text and incompressible bytes, so every run
// (and both builders in one run) see the same files.

/** mulberry32: a small, fast, seeded 32-bit PRNG. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface TextStyle {
  /** vocabulary (one in ten words is a hex number instead) */
  words: readonly string[];
  /** one indentation step, and how many steps a line may have (0 to levels - 1) */
  indent: string;
  levels: number;
  /** appended to every line before its newline */
  lineEnd: string;
}

/** Source-like text of exactly `size` bytes. */
export function textContent(rnd: () => number, size: number, style: TextStyle): Buffer {
  const parts: string[] = [];
  let len = 0;
  while (len < size) {
    const indent = style.indent.repeat(Math.floor(rnd() * style.levels));
    const n = 3 + Math.floor(rnd() * 9);
    const words: string[] = [];
    for (let i = 0; i < n; i++)
      words.push(
        rnd() < 0.1 ? Math.floor(rnd() * 1e6).toString(16) : style.words[Math.floor(rnd() * style.words.length)]!,
      );
    const line = indent + words.join(" ") + style.lineEnd + "\n";
    parts.push(line);
    len += line.length;
  }
  return Buffer.from(parts.join("").slice(0, size));
}

/** Incompressible bytes (as in shared libraries, archives, wheels, images). */
export function binaryContent(rnd: () => number, size: number): Buffer {
  const b = Buffer.allocUnsafe(size);
  let i = 0;
  for (; i + 4 <= size; i += 4) b.writeUInt32LE(Math.floor(rnd() * 4294967296), i);
  for (; i < size; i++) b[i] = Math.floor(rnd() * 256);
  return b;
}
