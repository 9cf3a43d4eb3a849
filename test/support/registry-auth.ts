// Test servers that sit beside a real docker-registry: a token service (RS256 JWTs signed with a self-made
// certificate, as distribution 2.8.2's `auth.token` expects) and a second origin that serves blob bytes for the
// registry's redirect middleware while refusing any Authorization header (like S3).

import { execFile } from "node:child_process";
import { randomUUID, sign } from "node:crypto";
import { createReadStream, promises as fsp } from "node:fs";
import http from "node:http";
import path from "node:path";
import { promisify } from "node:util";

const execFileP = promisify(execFile);

export interface TokenRequest {
  /** The user that authenticated, or undefined (anonymous); never the password. */
  user: string | undefined;
  scopes: string[];
  service: string | null;
  status: number;
}

export interface TokenServer {
  /** `http://127.0.0.1:<port>/token` */
  realm: string;
  service: string;
  issuer: string;
  /** PEM of the self-signed signing certificate (the registry's `rootcertbundle`). */
  certFile: string;
  /** Every token request, in order. */
  requests: TokenRequest[];
  /** `expires_in` of issued tokens, in seconds (default 300). Changeable by tests. */
  expiresIn: number;
  /** Added to the current time for `issued_at`, in seconds (default 0; negative = issued in the past). */
  issuedAtOffset: number;
  close(): Promise<void>;
}

export interface TokenServerOptions {
  /** name → password of users who may pull and push everything. */
  users: Record<string, string>;
  /** Users (also in `users`) who may only pull. */
  readOnlyUsers?: readonly string[];
  /** Anonymous users may pull repositories under this prefix (default "public/"). */
  anonymousPullPrefix?: string;
}

function b64url(data: Buffer | string): string {
  return Buffer.from(data).toString("base64url");
}

/** Starts a token service on 127.0.0.1 whose certificate and key are made with `openssl` in `dir`. */
export async function startTokenServer(dir: string, opts: TokenServerOptions): Promise<TokenServer> {
  const keyFile = path.join(dir, "token.key");
  const certFile = path.join(dir, "token.crt");
  await execFileP("openssl", [
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-keyout",
    keyFile,
    "-out",
    certFile,
    "-days",
    "30",
    "-subj",
    "/CN=strata-test-token",
  ]);
  const key = await fsp.readFile(keyFile, "utf8");
  const certPem = await fsp.readFile(certFile, "utf8");
  const certDer = certPem.replace(/-----(BEGIN|END) CERTIFICATE-----/g, "").replace(/\s+/g, "");
  const service = "strata-test-registry";
  const issuer = "strata-test-issuer";
  const anonymousPrefix = opts.anonymousPullPrefix ?? "public/";
  const readOnly = new Set(opts.readOnlyUsers ?? []);

  const requests: TokenRequest[] = [];
  const state = { expiresIn: 300, issuedAtOffset: 0 };

  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://localhost");
    if (url.pathname !== "/token") {
      res.writeHead(404).end();
      return;
    }
    const scopes = url.searchParams.getAll("scope");
    let user: string | undefined;
    const auth = req.headers.authorization;
    if (auth) {
      const m = /^Basic (.+)$/.exec(auth);
      const decoded = m ? Buffer.from(m[1]!, "base64").toString("utf8") : "";
      const colon = decoded.indexOf(":");
      const name = colon > 0 ? decoded.slice(0, colon) : "";
      const password = colon > 0 ? decoded.slice(colon + 1) : "";
      if (!m || !Object.hasOwn(opts.users, name) || opts.users[name] !== password) {
        requests.push({ user: name || undefined, scopes, service: url.searchParams.get("service"), status: 401 });
        const body = JSON.stringify({ errors: [{ code: "UNAUTHORIZED", message: "incorrect username or password" }] });
        res.writeHead(401, {
          "content-type": "application/json",
          "www-authenticate": 'Basic realm="strata-test-token"',
        });
        res.end(body);
        return;
      }
      user = name;
    }
    requests.push({ user, scopes, service: url.searchParams.get("service"), status: 200 });

    const access = [];
    for (const scope of scopes.flatMap((s) => s.split(" "))) {
      const parts = scope.split(":");
      if (parts.length < 3 || parts[0] !== "repository") continue;
      const actions = parts[parts.length - 1]!.split(",");
      const name = parts.slice(1, -1).join(":");
      let allowed: string[];
      if (user === undefined) allowed = name.startsWith(anonymousPrefix) ? ["pull"] : [];
      else if (readOnly.has(user)) allowed = ["pull"];
      else allowed = ["pull", "push"];
      const granted = actions.filter((a) => allowed.includes(a));
      if (granted.length) access.push({ type: "repository", name, actions: granted });
    }
    const now = Math.floor(Date.now() / 1000);
    const header = { typ: "JWT", alg: "RS256", x5c: [certDer] };
    // `aud` must be a plain string for 2.8.2.
    const claims = {
      iss: issuer,
      sub: user ?? "",
      aud: service,
      exp: now + 600,
      nbf: now - 10,
      iat: now,
      jti: randomUUID(),
      access,
    };
    const signingInput = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    const signature = sign("sha256", Buffer.from(signingInput), key);
    const token = `${signingInput}.${b64url(signature)}`;
    const body = JSON.stringify({
      token,
      access_token: token,
      expires_in: state.expiresIn,
      issued_at: new Date((now + state.issuedAtOffset) * 1000).toISOString(),
    });
    res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
    res.end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const addr = server.address();
  const port = typeof addr === "object" && addr ? addr.port : 0;
  return {
    realm: `http://127.0.0.1:${port}/token`,
    service,
    issuer,
    certFile,
    requests,
    get expiresIn() {
      return state.expiresIn;
    },
    set expiresIn(v: number) {
      state.expiresIn = v;
    },
    get issuedAtOffset() {
      return state.issuedAtOffset;
    },
    set issuedAtOffset(v: number) {
      state.issuedAtOffset = v;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export interface BlobOriginRequest {
  method: string;
  path: string;
  /** True when the request carried an Authorization header (answered 400). */
  hadAuthorization: boolean;
  status: number;
}

export interface BlobOrigin {
  /** `http://<bind>:<port>`: the registry's redirect `baseurl`. */
  url: string;
  requests: BlobOriginRequest[];
  close(): Promise<void>;
}

/**
 * Serves files of a registry's storage root (the paths the redirect middleware puts in `Location`). Like S3 with
 * presigned URLs: 400 for any request with an Authorization header, 403 for HEAD, GET only.
 */
export async function startBlobOrigin(bind: string, storageDir: string): Promise<BlobOrigin> {
  const requests: BlobOriginRequest[] = [];
  const root = path.resolve(storageDir);
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://localhost");
    const record = (status: number): void => {
      requests.push({
        method: req.method ?? "",
        path: url.pathname,
        hadAuthorization: req.headers.authorization !== undefined,
        status,
      });
    };
    if (req.headers.authorization !== undefined) {
      record(400);
      res.writeHead(400, { "content-type": "application/xml" });
      res.end("<Error><Code>InvalidArgument</Code><Message>Only one auth mechanism allowed</Message></Error>");
      return;
    }
    if (req.method !== "GET") {
      record(403);
      res.writeHead(403).end();
      return;
    }
    const file = path.resolve(root, "." + decodeURIComponent(url.pathname));
    if (!file.startsWith(root + path.sep)) {
      record(403);
      res.writeHead(403).end();
      return;
    }
    void fsp.stat(file).then(
      (st) => {
        record(200);
        res.writeHead(200, { "content-type": "application/octet-stream", "content-length": st.size });
        createReadStream(file).pipe(res);
      },
      () => {
        record(404);
        res.writeHead(404).end();
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, bind, resolve);
  });
  const addr = server.address();
  const port = typeof addr === "object" && addr ? addr.port : 0;
  return {
    url: `http://${bind}:${port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
