// Modal's Image methods Strata maps or refuses (issue 13): fromName names a stored image; micromamba,
// micromambaInstall and pipInstallPrivateRepos are definition errors that say what to write instead.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { InvalidDefinitionError } from "../../src/errors.js";
import { Image } from "../../src/sdk/image.js";

const loose = (o: Record<string, unknown>): any => o;

function rejects(fn: () => unknown, ...patterns: RegExp[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof InvalidDefinitionError, `expected InvalidDefinitionError, got ${String(e)}`);
    for (const p of patterns) assert.match(e.message, p);
    return true;
  });
}

describe("Image.fromName", () => {
  test("names a stored image, tag latest unless given", () => {
    assert.deepEqual(Image.fromName("team/app").plan("2026.11").steps[0]!.base, {
      kind: "image",
      imageId: "team/app:latest",
    });
    assert.deepEqual(Image.fromName("team/app:v2").plan("2026.11").steps[0]!.base, {
      kind: "image",
      imageId: "team/app:v2",
    });
  });

  test("a bad name or Modal's environment_name is a definition error", () => {
    rejects(() => Image.fromName("Team/App"), /^fromName: invalid image name "Team\/App"/);
    rejects(() => Image.fromName("a:b:c d"), /^fromName: invalid image name/);
    rejects(
      () => Image.fromName("app", loose({ environment_name: "prod" })),
      /fromName: option "environment_name"/,
      /no environments/,
    );
  });
});

describe("Modal methods Strata does not offer", () => {
  test("each throws, naming the method and what to write instead", () => {
    rejects(
      () => Image.micromamba(),
      /^micromamba: Modal's micromamba is not offered by Strata/,
      /mambaorg\/micromamba/,
    );
    rejects(() => Image.fromScratch().micromambaInstall("numpy"), /^micromambaInstall: /, /micromamba install -n base/);
    rejects(
      () => Image.fromScratch().pipInstallPrivateRepos("github.com/org/repo"),
      /^pipInstallPrivateRepos: /,
      /git\+https:\/\/\$GITHUB_TOKEN@/,
      /secrets/,
    );
  });
});
