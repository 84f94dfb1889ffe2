/**
 * Every Redis key the transport uses, named from the prefix. A topic is one stream read by one
 * consumer group per subscription group; each group also has a private stream (retries, publish
 * delays that came due, requeues, redriven dead letters), a sorted set of delayed entries and a
 * dead-letter stream.
 */

/** @internal */
export interface Keys {
  /** Stream of a topic: every publish (`XADD`). */
  readonly topic: (topic: string) => string
  /** Set of the groups bound to a topic: routing (unroutable when empty) and delayed fan-out. */
  readonly groupsOf: (topic: string) => string
  /** Set of every topic with a group: for tools (AsyncAPI, admin). */
  readonly topics: string
  /** The group's private stream, read beside the topic stream. */
  readonly queue: (group: string) => string
  /** Sorted set (score: due epoch ms) of the group's delayed entries. */
  readonly delayed: (group: string) => string
  /** The group's dead letters. */
  readonly dead: (group: string) => string
}

/** @internal */
export const make = (prefix: string): Keys => ({
  topic: (topic) => `${prefix}:s:${topic}`,
  groupsOf: (topic) => `${prefix}:groups:${topic}`,
  topics: `${prefix}:topics`,
  queue: (group) => `${prefix}:q:${group}`,
  delayed: (group) => `${prefix}:z:${group}`,
  dead: (group) => `${prefix}:dlq:${group}`
})
