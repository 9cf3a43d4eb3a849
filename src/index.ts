/** Strata's public API: define images by chaining, build them, inspect and export the results. */
export { Image } from "./sdk/image.js";
export type {
  ImageStepParams,
  ImageRunCommandsParams,
  ImageAptInstallParams,
  ImagePipInstallParams,
  ImageUvPipInstallParams,
  ImageRunFunctionParams,
  ImageAddLocalParams,
  ImageDebianSlimParams,
  ImageFromRegistryParams,
} from "./sdk/image.js";
export { Secret } from "./sdk/secret.js";
export type { SecretLike } from "./sdk/secret.js";
export { buildImage } from "./engine/build.js";
export type { BuildOptions, BuiltImage, StepResult } from "./engine/build.js";
export { LocalStore, defaultStoreRoot } from "./store/local.js";
export type { Store, BuildStore, BlobStore, ImageStore, HistoryStore, LayerDirStore, LockStore, StoreMaintenance, WorkSpace, ImageRecord, LayerRecord } from "./store/store.js";
export { StoreLayout } from "./store/layout.js";
export {
  StrataError,
  InvalidDefinitionError,
  DefinitionLoadError,
  LocalPathError,
  UnknownBuilderVersionError,
  StepFailedError,
  DigestMismatchError,
  NotFoundError,
  StoreError,
  SandboxError,
  MissingToolError,
  BuildCancelledError,
  LimitError,
  CgroupError,
} from "./errors.js";
