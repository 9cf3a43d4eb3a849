/** "Did you mean" hints for misspelt instructions, flags and mount keys. */

/** Levenshtein distance, for "did you mean" hints. */
function distance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...new Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      d[i]![j] = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
  }
  return d[a.length]![b.length]!;
}

/**
 * The farthest a Dockerfile word may be from what it names and still be suggested: BuildKit's `suggest.Search` takes
 * the closest option at a Levenshtein distance under 3, whatever the word's length (`type=tmp` → tmpfs).
 */
export const DOCKERFILE_SUGGEST_DISTANCE = 2;

/**
 * ` (did you mean X?)` for the option closest to `word`, or "" when none is close enough: within `maxDistance` edits
 * (case-insensitive); default 1 for words of up to 3 characters, else a third of the word's length (at least 2).
 */
export function suggest(word: string, options: readonly string[], maxDistance?: number): string {
  let best = "";
  let bestD = Infinity;
  for (const o of options) {
    const dd = distance(word.toUpperCase(), o.toUpperCase());
    if (dd < bestD) {
      bestD = dd;
      best = o;
    }
  }
  const limit = maxDistance ?? (word.length <= 3 ? 1 : Math.max(2, Math.floor(word.length / 3)));
  return bestD <= limit ? ` (did you mean ${best}?)` : "";
}
