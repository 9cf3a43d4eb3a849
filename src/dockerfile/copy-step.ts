/**
 * A Dockerfile COPY or ADD as a step: a `select` input (the context with its ignore patterns, a stage, or an image)
 * keyed by exactly the matched paths, a `url` input per ADD URL (keyed by content), a `select` from a `git` root
 * per ADD git source (`https://host/repo.git#ref:subdir`, `git://…`: its files at the resolved commit, keyed by
 * content; `--keep-git-dir`, `--checksum=<commit prefix>`), an inline input per heredoc.
 */
import type { BuilderVersion } from "../builder-version.js";
import type { Instruction } from "../plan/instructions.js";
import { parseGitRef } from "../plan/git-url.js";
import type { Plan, StepInput } from "../plan/step.js";
import type { PlannedInstruction } from "./expand-instruction.js";
import type { StepMaker, TranslationContext } from "./stage-chain.js";

const isUrl = (s: string) => /^https?:\/\//i.test(s);

/** The step maker of a COPY or ADD. */
export function copyStep(
  t: TranslationContext,
  pi: Extract<PlannedInstruction, { kind: "COPY" | "ADD" }>,
  self: number,
  reads: Set<number>,
): StepMaker {
  const at = t.loc(pi);
  const isAdd = pi.kind === "ADD";
  const paths: string[] = [];
  const urls: string[] = [];
  const gits: string[] = [];
  for (const s of pi.sources) {
    let git: ReturnType<typeof parseGitRef>;
    try {
      git = isAdd ? parseGitRef(s) : undefined;
    } catch (e) {
      t.fail(at, `ADD ${s}: ${(e as Error).message}`);
    }
    if (git) {
      if (git.scheme === "ssh")
        t.fail(at, `ADD ${s}: SSH git URLs are not supported (Strata forwards no SSH agent); use https:// or git://`);
      gits.push(s);
    } else if (isAdd && isUrl(s)) urls.push(s);
    else paths.push(s);
  }
  if (isAdd) {
    if (pi.checksum !== undefined && paths.length) t.fail(at, "ADD --checksum applies to URL sources only");
    if (pi.checksum !== undefined && gits.length && urls.length)
      t.fail(
        at,
        "ADD --checksum: give git and HTTP sources in separate ADD instructions (the checksum means one of them)",
      );
    if (gits.length && pi.checksum !== undefined && !/^[0-9a-f]{4,64}$/.test(pi.checksum))
      t.fail(
        at,
        `ADD --checksum=${pi.checksum}: invalid checksum for a git source: expected hex commit hash (a commit id or its prefix, at least 4 hex digits)`,
      );
    if (pi.keepGitDir && !gits.length) t.fail(at, "ADD --keep-git-dir applies to git sources only");
  }
  const from = pi.kind === "COPY" ? pi.from : undefined;
  const root = t.selectRoot(from, self, reads, at);
  const makers: ((b: BuilderVersion, sp: (s: number, b: BuilderVersion) => Plan) => StepInput)[] = [];
  const names: string[] = [];
  if (paths.length) {
    const exclude = [...pi.exclude];
    const parents = pi.kind === "COPY" && pi.parents;
    names.push("src");
    makers.push((b, sp) => ({
      kind: "select",
      name: "src",
      root: root(b, sp),
      patterns: [...paths],
      ...(exclude.length ? { exclude } : {}),
      ...(parents ? { parents: true } : {}),
      location: at,
    }));
  }
  gits.forEach((u, k) => {
    const name = `git${k}`;
    names.push(name);
    const keep = isAdd && pi.keepGitDir !== undefined ? { keepGitDir: pi.keepGitDir } : {};
    const checksum = isAdd && pi.checksum !== undefined ? { checksum: pi.checksum } : {};
    makers.push(() => ({
      kind: "select",
      name,
      root: { kind: "git", url: u, ...keep, ...checksum },
      patterns: ["."],
      location: at,
    }));
  });
  urls.forEach((u, k) => {
    const name = `url${k}`;
    names.push(name);
    const checksum = isAdd ? pi.checksum : undefined;
    makers.push(() => ({ kind: "url", name, url: u, ...(checksum !== undefined ? { checksum } : {}), location: at }));
  });
  const heredocNames: string[] = [];
  for (const h of pi.inline) {
    const name = `<<${h.path}`;
    if (names.includes(name)) t.fail(at, `${pi.kind}: two heredocs named ${h.path}`);
    names.push(name);
    heredocNames.push(name);
    const data = h.data;
    makers.push(() => ({ kind: "inline", name, content: data, mode: 0o644 }));
  }
  if (names.length === 0) t.fail(at, `${pi.kind} has no sources`);
  const sources = [...paths, ...gits, ...urls, ...heredocNames];
  const opts = {
    source: names[0]!,
    dest: pi.dest,
    sources,
    ...(names.length > 1 ? { inputs: names.slice(1) } : {}),
    ...(from !== undefined ? { from } : {}),
    ...(pi.chown !== undefined ? { chown: pi.chown } : {}),
    ...(pi.chmod !== undefined ? { chmod: pi.chmod } : {}),
    ...(pi.link ? { link: true } : {}),
    ...(pi.exclude.length ? { exclude: [...pi.exclude] } : {}),
    ...(pi.kind === "COPY" && pi.parents ? { parents: true } : {}),
  };
  const ins: Instruction =
    pi.kind === "ADD"
      ? {
          op: "ADD",
          ...opts,
          ...(pi.unpack !== undefined ? { unpack: pi.unpack } : {}),
          // A git checksum only verifies the commit the checkout is keyed by (its files): as BuildKit, adding it does
          // not change the step's key. An HTTP checksum stays in the instruction.
          ...(pi.checksum !== undefined && !gits.length ? { checksum: pi.checksum } : {}),
        }
      : { op: "COPY", ...opts };
  const common = t.common(pi, [ins], [], t.usedArgs(pi));
  return (b, sp) => ({
    ...common,
    instructions: structuredClone(common.instructions),
    secrets: [],
    inputs: makers.map((f) => f(b, sp)),
  });
}
