// Dagster's Modal Pipes example, translated call for call: `app_image` of
//   dagster-io/dagster @ 6005cfc2b5c7a19e804911697c1e638c5aa91b9b
//   examples/docs_projects/project_dagster_modal_pipes/src/modal_project/transcribe.py (Apache-2.0)
//
//   modal.Image.debian_slim(python_version="3.10")
//       .apt_install("git")
//       .pip_install("git+https://github.com/openai/whisper.git", "dacite", "jiwer", "ffmpeg-python",
//                    "gql[all]~=3.0.0a5", "python-multipart~=0.0.9", "pandas", "loguru==0.6.0",
//                    "torchaudio==2.1.0", "python-dotenv")
//       .apt_install("ffmpeg")
//       .pip_install("ffmpeg-python")
//
// Nothing can come from PyPI or GitHub here: the Python packages are SUBSTITUTED by the test wheels a loopback index
// serves (WHEELS_URL; fixtures/wheels: tinypkg, otherpkg). The Debian packages are the original's. Python 3.10 comes
// from python-build-standalone (builder version 2026.12; STRATA_PYTHON_STANDALONE_MIRROR points at a mirror).
import { Image } from "strata";

// The wheel index listens on host loopback, which a sandboxed step cannot reach: pip's steps ask for the host network.
const index = { indexUrl: process.env.WHEELS_URL, network: "host" } as const;

export default Image.debianSlim({ pythonVersion: "3.10" })
  .aptInstall("git")
  // whisper, dacite, jiwer, ffmpeg-python, gql, python-multipart, pandas, loguru, torchaudio, python-dotenv
  .pipInstall("tinypkg==1.0", "otherpkg", index)
  .aptInstall("ffmpeg")
  // ffmpeg-python (again, as the original does): here an upgrade, so the second install is visible
  .pipInstall("tinypkg==2.0", index);
