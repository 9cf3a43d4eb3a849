// A throw-away certificate authority for TLS tests, made with openssl: a CA and server certificates it signs for
// 127.0.0.1 / localhost (P-256 keys, valid for 2 days).
import { execFile } from "node:child_process";
import path from "node:path";
import { promisify } from "node:util";
import { promises as fsp } from "node:fs";

const run = promisify(execFile);

export interface TestCa {
  dir: string;
  caFile: string;
  caKey: string;
}

export async function makeTestCa(dir: string): Promise<TestCa> {
  const caFile = path.join(dir, "ca.pem");
  const caKey = path.join(dir, "ca.key");
  await run("openssl", [
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
    "-keyout",
    caKey,
    "-out",
    caFile,
    "-days",
    "2",
    "-subj",
    "/CN=strata test CA",
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  ]);
  return { dir, caFile, caKey };
}

/** A server certificate for 127.0.0.1 and localhost signed by `ca`, written to `<name>.pem` / `<name>.key`. */
export async function issueServerCert(
  ca: TestCa,
  name: string,
): Promise<{ certFile: string; keyFile: string; serial: string }> {
  const certFile = path.join(ca.dir, `${name}.pem`);
  const keyFile = path.join(ca.dir, `${name}.key`);
  const csr = path.join(ca.dir, `${name}.csr`);
  const ext = path.join(ca.dir, `${name}.ext`);
  await fsp.writeFile(
    ext,
    "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n" +
      "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
  );
  await run("openssl", [
    "req",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
    "-keyout",
    keyFile,
    "-out",
    csr,
    "-subj",
    "/CN=127.0.0.1",
  ]);
  const serial = (await run("openssl", ["rand", "-hex", "16"])).stdout.trim().toUpperCase();
  await run("openssl", [
    "x509",
    "-req",
    "-in",
    csr,
    "-CA",
    ca.caFile,
    "-CAkey",
    ca.caKey,
    "-set_serial",
    `0x${serial}`,
    "-out",
    certFile,
    "-days",
    "2",
    "-extfile",
    ext,
  ]);
  return { certFile, keyFile, serial };
}
