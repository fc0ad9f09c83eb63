import type { IncomingMessage } from 'node:http';
import type { HubError } from './hub-http.js';
import type { StoredRepo } from './hub-store.js';
import type { RepoType } from './hub-types.js';

export interface AccessPolicy {
  tokens: { valid: Set<string>; gatedApproved: Set<string> };
  endpoint: string;
  gateApiCalls: boolean;
}

export function bearerToken(req: IncomingMessage): { present: boolean; token: string | undefined } {
  const auth = req.headers.authorization;
  if (auth === undefined) return { present: false, token: undefined };
  const m = /^Bearer\s+(\S+)\s*$/i.exec(auth);
  return { present: true, token: m?.[1] };
}

/**
 * Mirrors huggingface.co: a bad token is refused even on public repos (a stale HF_TOKEN breaks
 * public downloads too); gated repos keep their metadata public and gate only the files.
 */
export function checkAccess(
  policy: AccessPolicy,
  req: IncomingMessage,
  type: RepoType,
  id: string,
  repo: StoredRepo | undefined,
  kind: 'api' | 'file',
): HubError | undefined {
  const { present, token } = bearerToken(req);
  const valid = token !== undefined && policy.tokens.valid.has(token);
  if (present && !valid) {
    return { status: 401, message: 'Invalid username or password.', headers: { 'www-authenticate': 'Bearer realm="Hugging Face"' } };
  }
  if (!repo) return { status: 404, code: 'RepoNotFound', message: 'Repository not found' };
  if (repo.private && !valid) {
    return { status: 401, code: 'RepoNotFound', message: 'Invalid username or password.' };
  }
  if (repo.gated && (kind === 'file' || policy.gateApiCalls)) {
    const what = `${type === 'dataset' ? 'dataset' : 'model'} ${id}`;
    const page = `${policy.endpoint}/${type === 'dataset' ? 'datasets/' : ''}${id}`;
    if (!valid) {
      return {
        status: 401,
        code: 'GatedRepo',
        message: `Access to ${what} is restricted. You must have access to it and be authenticated to access it. Please log in.`,
      };
    }
    if (!policy.tokens.gatedApproved.has(token)) {
      return {
        status: 403,
        code: 'GatedRepo',
        message: `Access to ${what} is restricted and you are not in the authorized list. Visit ${page} to ask for access.`,
      };
    }
  }
  return undefined;
}
