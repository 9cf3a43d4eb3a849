/**
 * Reading a local `pyproject.toml` when a definition is made, as Modal's client does: `pipInstallFromPyproject`
 * installs `[project] dependencies` plus the chosen `[project.optional-dependencies]` groups (so what is keyed is
 * the resulting package list, not the file). Pure: text in, packages or a typed error out.
 */
import { InvalidDefinitionError } from "../errors.js";
import { toml } from "../util/toml.js";

/** The parsed TOML document, or an error naming the file and the line. */
export function parsePyproject(method: string, file: string, text: string): Record<string, unknown> {
  try {
    return toml().parse(text) as Record<string, unknown>;
  } catch (e) {
    const { TomlError } = toml();
    const where = e instanceof TomlError ? `:${e.line}:${e.column}` : "";
    const why = e instanceof TomlError ? e.message.split("\n")[0] : (e as Error).message;
    throw new InvalidDefinitionError(`${method}: ${file}${where} is not valid TOML: ${why}`, { cause: e });
  }
}

function isTable(x: unknown): x is Record<string, unknown> {
  return typeof x === "object" && x !== null && !Array.isArray(x) && !(x instanceof Date);
}

function stringList(method: string, file: string, where: string, x: unknown): string[] {
  if (!Array.isArray(x) || x.some((d) => typeof d !== "string"))
    throw new InvalidDefinitionError(`${method}: ${file}: ${where} must be a list of requirement strings`);
  return x as string[];
}

/**
 * `[project] dependencies` plus each group of `optionalDependencies` from `[project.optional-dependencies]`, sorted
 * (as Modal sorts them, so reordering the file does not change the key), without duplicates.
 */
export function pyprojectDependencies(
  method: string,
  file: string,
  text: string,
  optionalDependencies: readonly string[] = [],
): string[] {
  const doc = parsePyproject(method, file, text);
  const project = doc.project;
  if (!isTable(project))
    throw new InvalidDefinitionError(
      `${method}: ${file} has no [project] table; pipInstallFromPyproject reads [project] dependencies (PEP 621). ` +
        "For a Poetry project without one, use poetryInstallFromFile",
    );
  const dynamic = Array.isArray(project.dynamic) ? project.dynamic : [];
  if (dynamic.includes("dependencies") || (optionalDependencies.length && dynamic.includes("optional-dependencies")))
    throw new InvalidDefinitionError(
      `${method}: ${file} declares its dependencies dynamic ([project] dynamic), so they cannot be read from the ` +
        "file: list them in [project] dependencies, or install the project with pipInstall/runCommands",
    );
  const deps =
    project.dependencies === undefined ? [] : stringList(method, file, "[project] dependencies", project.dependencies);
  const optional = project["optional-dependencies"];
  const groups = isTable(optional) ? optional : {};
  if (optional !== undefined && !isTable(optional))
    throw new InvalidDefinitionError(`${method}: ${file}: [project.optional-dependencies] must be a table of lists`);
  const out = new Set(deps);
  for (const g of optionalDependencies) {
    if (!Object.hasOwn(groups, g)) {
      const have = Object.keys(groups);
      throw new InvalidDefinitionError(
        `${method}: ${file} has no optional dependency group "${g}"` +
          (have.length ? ` (it has ${have.join(", ")})` : " (it defines no [project.optional-dependencies])"),
      );
    }
    for (const d of stringList(method, file, `[project.optional-dependencies] ${g}`, groups[g])) out.add(d);
  }
  return [...out].map((d) => d.trim()).sort();
}
