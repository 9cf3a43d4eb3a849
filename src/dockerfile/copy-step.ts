/**
 * A Dockerfile COPY or ADD as a step: a `select` input (the context with its ignore patterns, a stage, or an image)
 * keyed by exactly the matched paths, a `url` input per ADD URL (keyed by content), an inline input per heredoc.
 * Git sources are refused.
 */
import type { BuilderVersion } from "../builder-version.js";
import type { Instruction } from "../plan/instructions.js";
import type { Plan, StepInput } from "../plan/step.js";
import type { PlannedInstruction } from "./expand-instruction.js";
import type { StepMaker, TranslationContext } from "./stage-chain.js";

const isUrl = (s: string) => /^https?:\/\//i.test(s);
const isGit = (s: string) => /^git@|^git:\/\/|\.git(#.*)?$/i.test(s);

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
  for (const s of pi.sources) {
    if (isAdd && isUrl(s)) {
      if (isGit(s))
        t.fail(at, `ADD ${s}: git sources are not supported; clone in a RUN step or COPY a checkout instead`);
      urls.push(s);
    } else if (isAdd && isGit(s) && /^git@|^git:\/\//.test(s)) {
      t.fail(at, `ADD ${s}: git sources are not supported; clone in a RUN step or COPY a checkout instead`);
    } else {
      paths.push(s);
    }
  }
  if (isAdd) {
    if (pi.checksum !== undefined && paths.length) t.fail(at, "ADD --checksum applies to URL sources only");
    if (pi.keepGitDir) t.fail(at, "ADD --keep-git-dir: git sources are not supported");
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
  const sources = [...paths, ...urls, ...heredocNames];
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
          ...(pi.checksum !== undefined ? { checksum: pi.checksum } : {}),
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
