// A language-learning app's NLP service (it picks the vocabulary a learner at a given CEFR level should study from a
// text, for Dutch, Serbian and English), translated call for call: `image` of its `modal_app.py`, "vocab-nlp"
// (found through the code search index, file id 55417597755; the index did not name its repository, commit or
// licence, so only the call chain below is reproduced, none of its code):
//
//   image = modal.Image.debian_slim(python_version="3.13").pip_install(
//       "fastapi[standard]",
//       "stanza",
//   ).run_commands(
//       "python -c \"import stanza; stanza.download('nl', ...); stanza.download('sr', ...); stanza.download('en', ...)\"",
//   ).add_local_dir(str(DATA_DIR), remote_path="/root/data"
//   ).add_local_python_source("pipeline")
//
// Nothing can come from PyPI or the internet here: fastapi and stanza are SUBSTITUTED by the test wheels of a
// loopback index (WHEELS_URL: tinypkg, otherpkg), and the model download by a step that writes a tiny "model" with
// them. `pipeline/` (found as Modal finds it: on the Python path, here the definition's directory) and `data/` are
// tiny stand-ins for the app's own. Python 3.13 is Debian trixie's own (builder version 2026.12).
import { Image } from "strata";

const DATA_DIR = "./data";

export default Image.debianSlim({ pythonVersion: "3.13" })
  // "fastapi[standard]", "stanza"
  .pipInstall("tinypkg==2.0", "otherpkg", { indexUrl: process.env.WHEELS_URL, network: "host" })
  // stanza.download('nl'), ('sr'), ('en')
  .runCommands(
    `python -c "import tinypkg, pathlib; d = pathlib.Path('/root/stanza_resources'); d.mkdir(); [(d / l).write_text(tinypkg.VERSION) for l in ('nl', 'sr', 'en')]"`,
  )
  .addLocalDir(DATA_DIR, "/root/data")
  .addLocalPythonSource("pipeline");
