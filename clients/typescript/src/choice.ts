/** Plain names for the API's enums in requests: an unknown name is a TypeError, unsent. */

/** `table[name]`, or a TypeError listing the accepted names (nothing is sent). */
export function choice<N extends string, V>(table: Record<N, V>, name: string, field: string): V {
  if (!Object.hasOwn(table, name)) {
    const names = Object.keys(table).map((n) => JSON.stringify(n));
    throw new TypeError(`${field} must be one of ${names.join(", ")}, not ${JSON.stringify(name)}`);
  }
  return table[name as N];
}
