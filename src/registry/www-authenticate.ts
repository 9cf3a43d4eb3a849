/** `WWW-Authenticate` headers (RFC 7235): the challenges a registry answers a 401 with. */

/** One parsed `WWW-Authenticate` challenge; param names are lowercased. */
export interface AuthChallenge {
  scheme: string;
  params: Record<string, string>;
}

/**
 * Parses an RFC 7235 `WWW-Authenticate` header into challenges. Handles several challenges in one header and
 * quoted values containing commas, spaces and backslash escapes (`scope="repository:a:pull,push repository:b:pull"`).
 */
export function parseWwwAuthenticate(header: string): AuthChallenge[] {
  const out: AuthChallenge[] = [];
  const n = header.length;
  let i = 0;
  let current: AuthChallenge | undefined;
  const skipWs = (): void => {
    while (i < n && (header[i] === " " || header[i] === "\t")) i++;
  };
  const readToken = (): string => {
    const m = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+/.exec(header.slice(i));
    if (!m) return "";
    i += m[0].length;
    return m[0];
  };
  while (i < n) {
    skipWs();
    if (i >= n) break;
    if (header[i] === ",") {
      i++;
      continue;
    }
    const tok = readToken();
    if (!tok) {
      i++; // stray character: skip it
      continue;
    }
    skipWs();
    if (header[i] === "=" && current && header[i + 1] !== "=") {
      i++;
      skipWs();
      let value = "";
      if (header[i] === '"') {
        i++;
        while (i < n && header[i] !== '"') {
          if (header[i] === "\\" && i + 1 < n) i++;
          value += header[i];
          i++;
        }
        i++; // closing quote
      } else {
        const start = i;
        while (i < n && header[i] !== "," && header[i] !== " " && header[i] !== "\t") i++;
        value = header.slice(start, i);
      }
      current.params[tok.toLowerCase()] = value;
    } else if (header[i] === "=") {
      // token68 (e.g. `Negotiate abc==`): skip the padding, nothing to record.
      while (i < n && header[i] === "=") i++;
    } else {
      current = { scheme: tok, params: Object.create(null) as Record<string, string> };
      out.push(current);
    }
  }
  return out;
}
