import type { createClient } from "redis"

/** Deletes every key matching `match` (SCAN, never KEYS). */
export const deleteKeys = async (client: ReturnType<typeof createClient>, match: string): Promise<void> => {
  for await (const keys of client.scanIterator({ MATCH: match, COUNT: 1000 })) {
    if (keys.length > 0) await client.del(keys)
  }
}
