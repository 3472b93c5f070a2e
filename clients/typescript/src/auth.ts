/** The bearer headers of a call, or MissingCredentials before anything is sent. */

import { MissingCredentials } from "./errors.js";

export const ENV_ADDRESS = "INTERLOCK_ADDRESS";
export const ENV_API_KEY = "INTERLOCK_API_KEY";
export const ENV_OPERATOR_KEY = "INTERLOCK_OPERATOR_KEY";

/** Which key a call needs, and how to tell the caller to configure it. */
export interface KeySource {
  key: string | undefined;
  what: string;
  hint: string;
}

export function bearer({ key, what, hint }: KeySource): Record<string, string> {
  if (!key) {
    throw new MissingCredentials(`no ${what} configured: ${hint}`);
  }
  return { authorization: `Bearer ${key}` };
}

/** `value` if given, else the environment variable; empty counts as unset. */
export function fromEnv(value: string | undefined, variable: string): string | undefined {
  return value || process.env[variable] || undefined;
}
