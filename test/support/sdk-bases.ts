/**
 * One image per way an SDK chain can start — every `Image` base and its variants (registry logins, insecure, ECR, both
 * GCP modes, `fromId`, a multi-stage Dockerfile with a secret mount, `addPython`) — for tests that must cover every
 * base (plans as plain data, the wire round trip). `dockerfile(name, text)` writes a Dockerfile and returns its path.
 */
import { generateKeyPairSync } from "node:crypto";
import { Image } from "../../src/sdk/image.js";
import { Secret } from "../../src/sdk/secret.js";

export function everySdkBase(dockerfile: (name: string, text: string) => string): [string, Image][] {
  const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const key = JSON.stringify({
    type: "service_account",
    client_email: "b@p.iam.gserviceaccount.com",
    private_key: privateKey.export({ type: "pkcs8", format: "pem" }),
    token_uri: "https://oauth2.googleapis.com/token",
  });
  const multiStage = dockerfile(
    "sdk-multi-stage",
    "FROM scratch AS a\nRUN --mount=type=secret,id=tok true\nFROM scratch\nCOPY --from=a / /a\nRUN --mount=type=secret,id=tok,env=T true\n",
  );
  return [
    ["fromScratch", Image.fromScratch()],
    ["debianSlim", Image.debianSlim()],
    ["debianSlim 3.13", Image.debianSlim({ pythonVersion: "3.13" })],
    [
      "fromRegistry with a login",
      Image.fromRegistry("127.0.0.1:5000/base:1", {
        secret: { REGISTRY_USERNAME: "u", REGISTRY_PASSWORD: "p" },
        setupDockerfileCommands: ["ENV X=1"],
      }),
    ],
    ["fromRegistry insecure", Image.fromRegistry("registry.example:5000/base:1", { insecure: true })],
    [
      "fromAwsEcr",
      Image.fromAwsEcr("123456789012.dkr.ecr.us-east-1.amazonaws.com/base:7", {
        secret: { AWS_ACCESS_KEY_ID: "AKID", AWS_SECRET_ACCESS_KEY: "k", AWS_REGION: "us-east-1" },
      }),
    ],
    [
      "fromGcpArtifactRegistry (access token)",
      Image.fromGcpArtifactRegistry("us-east1-docker.pkg.dev/p/r/img:v1", { secret: { SERVICE_ACCOUNT_JSON: key } }),
    ],
    [
      "fromGcpArtifactRegistry (json key)",
      Image.fromGcpArtifactRegistry("us-east1-docker.pkg.dev/p/r/img:v1", {
        secret: { SERVICE_ACCOUNT_JSON: key },
        mode: "json_key",
      }),
    ],
    ["fromId", Image.fromId("sha256:0123")],
    [
      "fromDockerfile",
      Image.fromDockerfile(multiStage, {
        secrets: Secret.fromObject({ tok: "v" }),
        buildArgs: { HTTP_PROXY: "http://proxy" },
      }),
    ],
    ["addPython", Image.fromRegistry("127.0.0.1:5000/base:1", { addPython: "3.11" })],
    [
      "fromDockerfile addPython",
      Image.fromDockerfile(multiStage, { addPython: "3.11", secrets: Secret.fromObject({ tok: "v" }) }),
    ],
  ];
}
