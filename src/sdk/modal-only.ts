/**
 * Modal `Image` methods Strata does not offer, kept as methods that throw: a definition ported from Modal fails where
 * the call is written, with what to write instead, rather than with "is not a function".
 */
import { InvalidDefinitionError } from "../errors.js";

const INSTEAD: Readonly<Record<string, string>> = {
  micromamba:
    "Strata has no micromamba base of its own; start from the micromamba image, e.g. " +
    'Image.fromRegistry("mambaorg/micromamba:2.1.1-debian12-slim"), and install with runCommands("micromamba install -n base -y …")',
  micromambaInstall:
    'use runCommands("micromamba install -n base -y <packages> -c conda-forge") on a micromamba base ' +
    '(Image.fromRegistry("mambaorg/micromamba:…"))',
  pipInstallPrivateRepos:
    "install from the repository with the token as a secret: " +
    'runCommands("python -m pip install git+https://$GITHUB_TOKEN@github.com/org/repo@ref", { secrets: [Secret.fromLocalEnv(["GITHUB_TOKEN"])] }) ' +
    '(after aptInstall("git")); the token is exposed to that step only and redacted from logs',
};

/** Throws the InvalidDefinitionError for Modal's `method`, saying what to write in Strata instead. */
export function modalOnly(method: string): never {
  throw new InvalidDefinitionError(`${method}: Modal's ${method} is not offered by Strata: ${INSTEAD[method] ?? ""}`);
}
