/** The program's version; deno.json carries the same string (a test keeps them equal). */
export const VERSION = "0.1.0";
