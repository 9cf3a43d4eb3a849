/**
 * `addLocalPythonSource`: where a Python module's source is on this machine, found as Python's import system finds
 * it (Modal's `add_local_python_source` asks `importlib` the same question): along the search path — `PYTHONPATH`'s
 * entries, then the current directory (the definition file's directory while strata loads it, as a script's own
 * directory leads `sys.path`) —
 * the first entry holding a regular package (`<name>/__init__.py`) or a module (`<name>.py`) wins; a namespace
 * package (a directory without `__init__.py`) is used only when no entry has either, and then all its portions are.
 */
import { statSync } from "node:fs";
import path from "node:path";
import { InvalidDefinitionError } from "../errors.js";

/** One place a module's source is copied from, and where it goes in the image (under `/root`, as Modal puts it). */
export interface PythonSource {
  kind: "package" | "module";
  localPath: string;
  remotePath: string;
}

const MODULE_NAME = /^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$/;

/** The directories searched, in order: `PYTHONPATH` entries (empty entries mean the current directory), then `cwd`. */
export function pythonSearchPath(env: NodeJS.ProcessEnv = process.env, cwd = process.cwd()): string[] {
  const entries = (env.PYTHONPATH ?? "")
    .split(":")
    .filter((e, _i, all) => e !== "" || all.length > 1)
    .map((e) => path.resolve(cwd, e || "."));
  return [...new Set([...entries, path.resolve(cwd)])];
}

function kindOf(p: string): "file" | "dir" | undefined {
  try {
    const st = statSync(p);
    return st.isDirectory() ? "dir" : st.isFile() ? "file" : undefined;
  } catch {
    return undefined;
  }
}

/** Where `module`'s source is (see the module comment), or an error naming the directories searched. */
export function findPythonSource(method: string, module: string, searchPath: readonly string[]): PythonSource[] {
  if (typeof module !== "string" || !MODULE_NAME.test(module))
    throw new InvalidDefinitionError(
      `${method}: "${String(module)}" is not a Python module name (dotted identifiers, e.g. "myapp" or "myapp.utils")`,
    );
  const rel = module.split(".").join("/");
  const remote = path.posix.join("/root", rel);
  const portions: string[] = [];
  for (const dir of searchPath) {
    const pkg = path.join(dir, rel);
    if (kindOf(path.join(pkg, "__init__.py")) === "file")
      return [{ kind: "package", localPath: pkg, remotePath: remote }];
    if (kindOf(`${pkg}.py`) === "file") return [{ kind: "module", localPath: `${pkg}.py`, remotePath: `${remote}.py` }];
    if (kindOf(pkg) === "dir") portions.push(pkg);
  }
  if (portions.length) return portions.map((p) => ({ kind: "package", localPath: p, remotePath: remote }));
  throw new InvalidDefinitionError(
    `${method}: no Python module "${module}" (looked for ${rel}/__init__.py, ${rel}.py or a ${rel}/ directory in ` +
      `${searchPath.join(", ")}); run strata from the directory that holds it, or add its parent to PYTHONPATH`,
  );
}

/**
 * Modal's default filter for Python sources: only `.py` files, leaving out dot-prefixed names and `__pycache__`
 * (a predicate over paths relative to `dir`, as the `ignore` option's callable form takes them).
 */
export function nonPythonFiles(dir: string): (rel: string) => boolean {
  return (rel) => {
    const name = rel.slice(rel.lastIndexOf("/") + 1);
    if (name.startsWith(".") || name === "__pycache__") return true;
    if (kindOf(path.join(dir, rel)) === "dir") return false;
    return !name.endsWith(".py");
  };
}
