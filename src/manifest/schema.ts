import * as z from 'zod';

/** Manifest v1, field by field. Semantic checks (URIs, dest safety, duplicates) live in load.ts. */
export const EntrySchema = z.strictObject({
  source: z.string().min(1),
  /** Optional for civitai sources only (derived from the model type and the file name). */
  dest: z.string().optional(),
  /** civitai sources: which file of the version, by name. */
  file: z.string().min(1).optional(),
  sha256: z
    .string()
    .regex(/^[0-9a-fA-F]{64}$/, 'must be 64 hex characters')
    .optional(),
  size: z.number().int().nonnegative().optional(),
  allow_pickle: z.boolean().optional(),
  required: z.boolean().optional(),
});

export const ManifestSchema = z.strictObject({
  version: z.literal(1, { error: 'must be 1' }),
  models: z.array(z.unknown()),
  // No leading dot: dot names are reserved (the store, publish temps), see destProblem.
  folders: z.array(z.string().regex(/^[A-Za-z0-9_-][A-Za-z0-9_.-]*$/, 'must be a plain folder name, not starting with "."')).optional(),
  on_demand: z
    .strictObject({
      allow: z.array(z.string()),
      max_bytes: z.union([z.number(), z.string()]),
      require_sha256: z.boolean().optional(),
    })
    .optional(),
  /** Tried in order before the origin, for blobs whose sha256 is known (manifest/mirrors.ts). */
  mirrors: z.array(z.string()).optional(),
  mirror_write: z.string().optional(),
  s3: z
    .strictObject({
      endpoint: z.string().url().optional(),
      region: z.string().min(1).optional(),
      path_style: z.boolean().optional(),
    })
    .optional(),
});

export type EntryInput = z.infer<typeof EntrySchema>;
