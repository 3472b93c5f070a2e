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

/**
 * The key of a call either key may make: the sandbox API key when there is
 * one (the call then sees only its sandbox), else the operator key (every
 * sandbox). A client with neither throws MissingCredentials naming both.
 */
export function apiKeyElseOperator(apiKey: KeySource, operatorKey: KeySource): KeySource {
  if (apiKey.key) return apiKey;
  if (operatorKey.key) return operatorKey;
  return {
    key: undefined,
    what: "sandbox API key or operator key",
    hint: `pass apiKey or operatorKey, or set ${ENV_API_KEY} or ${ENV_OPERATOR_KEY}`,
  };
}
