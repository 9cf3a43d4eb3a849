import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { describe, test } from "node:test";
import { InvalidDefinitionError } from "../../src/errors.js";
import { Image } from "../../src/sdk/image.js";

describe("registry bases", () => {
  test("fromAwsEcr and fromGcpArtifactRegistry record how to log in, and keep credentials out of the plan's JSON", () => {
    const ecr = Image.fromAwsEcr("123456789012.dkr.ecr.us-east-1.amazonaws.com/base:7", {
      secret: {
        AWS_ACCESS_KEY_ID: "AKIDEXAMPLE",
        AWS_SECRET_ACCESS_KEY: "very-secret-key-value",
        AWS_REGION: "us-east-1",
      },
    }).plan("2026.11");
    assert.deepEqual(ecr.steps[0]!.base, {
      kind: "registry",
      ref: "123456789012.dkr.ecr.us-east-1.amazonaws.com/base:7",
      login: "ecr",
    });
    assert.ok(!JSON.stringify(ecr).includes("very-secret-key-value"));
    assert.equal(ecr.steps[0]!.description, "fromAwsEcr 123456789012.dkr.ecr.us-east-1.amazonaws.com/base:7");
    const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
    const key = JSON.stringify({
      type: "service_account",
      client_email: "b@p.iam.gserviceaccount.com",
      private_key: privateKey.export({ type: "pkcs8", format: "pem" }),
      token_uri: "https://oauth2.googleapis.com/token",
    });
    const gcp = Image.fromGcpArtifactRegistry("us-east1-docker.pkg.dev/p/r/img:v1", {
      secret: { SERVICE_ACCOUNT_JSON: key },
      mode: "json_key",
    }).plan("2026.11");
    assert.deepEqual(gcp.steps[0]!.base, {
      kind: "registry",
      ref: "us-east1-docker.pkg.dev/p/r/img:v1",
      login: "gcp",
      gcpMode: "json_key",
    });
    assert.ok(!JSON.stringify(gcp).includes("PRIVATE KEY"));
  });

  test("missing login variables are reported when the image is defined", () => {
    assert.throws(
      () =>
        Image.fromAwsEcr("123456789012.dkr.ecr.us-east-1.amazonaws.com/base:7", {
          secret: { AWS_REGION: "us-east-1" },
        }),
      InvalidDefinitionError,
    );
    assert.throws(
      () => Image.fromGcpArtifactRegistry("us-east1-docker.pkg.dev/p/r/img:v1", { secret: {} }),
      /SERVICE_ACCOUNT_JSON/,
    );
  });
});
