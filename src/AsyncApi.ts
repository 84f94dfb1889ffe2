/**
 * An AsyncAPI 3.0 document for the app's message contracts: every Topic is a channel on the
 * topic exchange (or, with `transport: "nats"`, a NATS subject captured by the JetStream stream),
 * every Task a channel (`tasks.<name>`) its workers consume, each message with the JSON Schema
 * derived from its effect Schema — what FastStream users get from `faststream docs`.
 *
 * @example
 * ```ts
 * import { Effect, Schema } from "effect"
 * import { AsyncApi, Broker } from "effect-background"
 *
 * const OrderPlaced = Broker.topic("orders.placed", Schema.Struct({ id: Schema.String }))
 * const doc = AsyncApi.make({ info: { title: "Orders", version: "1.0.0" }, topics: [OrderPlaced] })
 * ```
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Predicate from "effect/Predicate"
import * as Schema from "effect/Schema"
import * as AST from "effect/SchemaAST"
import * as Broker from "./Broker.js"
import * as internal from "./internal/asyncapi.js"
import { durableOf as natsDurable } from "./internal/nats/subjects.js"
import * as wire from "./internal/wire.js"
import * as Task from "./Task.js"

/**
 * @since 0.1.0
 * @category models
 */
export type JsonValue = internal.JsonValue

/**
 * The generated document (AsyncAPI 3.0.0), ready for `JSON.stringify`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Document {
  readonly asyncapi: "3.0.0"
  readonly info: Info
  readonly defaultContentType: "application/json"
  readonly servers?: Readonly<Record<string, Server>>
  readonly channels: Readonly<Record<string, JsonValue>>
  readonly operations: Readonly<Record<string, JsonValue>>
  readonly components: {
    readonly messages: Readonly<Record<string, JsonValue>>
    readonly schemas: Readonly<Record<string, JsonValue>>
  }
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Info {
  readonly title: string
  readonly version: string
  readonly description?: string
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Server {
  /** `host[:port]`, e.g. `rabbitmq.internal:5672`. */
  readonly host: string
  readonly protocol: string
  readonly pathname?: string
  readonly description?: string
}

/**
 * What the generator reads from a Topic (`Broker.topic`); wildcard patterns are subscriptions,
 * not contracts, and are left out.
 *
 * @since 0.1.0
 * @category models
 */
export interface TopicLike {
  readonly [Broker.TopicTypeId]: "topic" | "pattern"
  readonly name: string
  readonly schema: { readonly ast: AST.AST }
}

/**
 * What the generator reads from a Task (`Task.make`).
 *
 * @since 0.1.0
 * @category models
 */
export interface TaskLike {
  readonly [Task.TypeId]: Task.TypeId
  readonly name: string
  readonly group: string
  readonly topic: { readonly name: string }
  readonly payload: { readonly ast: AST.AST }
  readonly success: { readonly ast: AST.AST }
  readonly failure: { readonly ast: AST.AST }
  /** Absent: persistent. */
  readonly delivery?: Task.Delivery | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  readonly info: Info
  readonly topics?: Iterable<TopicLike> | undefined
  readonly tasks?: Iterable<TaskLike> | undefined
  readonly servers?: Readonly<Record<string, Server>> | undefined
  /** Prefix of the broker's exchanges (RabbitMQBroker's `prefix`) or keys (RedisBroker's). Default `eb`. */
  readonly prefix?: string | undefined
  /**
   * The transport the channels are described on: `rabbitmq` (AMQP bindings, the default), `nats`
   * (NATS bindings; the JetStream stream and durable consumers as extensions) or `redis` (each
   * channel is the stream `<prefix>:s:<topic>`; every subscription group is a consumer group on it).
   */
  readonly transport?: "rabbitmq" | "nats" | "redis" | undefined
  /** NatsBroker's `stream` (with `transport: "nats"`). Default `EB`. */
  readonly stream?: string | undefined
}

/**
 * A Schema the generator cannot express as JSON Schema (a `Schema.declare` without a
 * `jsonSchema` annotation, for instance).
 *
 * @since 0.1.0
 * @category errors
 */
export class AsyncApiError extends Schema.TaggedError<AsyncApiError>()("AsyncApiError", {
  channel: Schema.String,
  detail: Schema.String
}) {
  /** @since 0.1.0 */
  override get message(): string {
    return `cannot describe channel "${this.channel}": ${this.detail}`
  }
}

/**
 * @since 0.1.0
 * @category guards
 */
export const isTopic = (u: unknown): u is TopicLike =>
  Predicate.hasProperty(u, Broker.TopicTypeId) && u[Broker.TopicTypeId] === "topic"

/**
 * @since 0.1.0
 * @category guards
 */
export const isTask = (u: unknown): u is TaskLike => Task.isTask(u)

/**
 * Picks the Topics and Tasks out of a module's exports (what `scripts/asyncapi.ts` does).
 *
 * @since 0.1.0
 * @category constructors
 */
export const collect = (
  values: Iterable<unknown>
): { readonly topics: ReadonlyArray<TopicLike>; readonly tasks: ReadonlyArray<TaskLike> } => {
  const topics = new Map<string, TopicLike>()
  const tasks = new Map<string, TaskLike>()
  for (const value of values) {
    if (isTask(value)) tasks.set(value.name, value)
    else if (isTopic(value)) topics.set(value.name, value)
  }
  return { topics: Array.from(topics.values()), tasks: Array.from(tasks.values()) }
}

const describeError = (error: unknown): string => error instanceof Error ? error.message : String(error)

const isNothing = (ast: AST.AST): boolean => AST.isVoidKeyword(ast) || AST.isNeverKeyword(ast)

/** Every header the library puts on the wire beside the caller's (see docs/broker.md, wire format). */
const headersSchema: JsonValue = {
  type: "object",
  description:
    "The caller's headers, plus the library's (all optional; names x-eb-* and the W3C trace context are reserved)",
  properties: {
    traceparent: { type: "string", description: "W3C trace context of the producer's span" },
    tracestate: { type: "string", description: "W3C trace state, passed on when present" },
    "x-eb-attempt": {
      type: "string",
      description: "1 on first delivery, incremented by each retry (on retried copies)"
    },
    "x-eb-routing-key": {
      type: "string",
      description:
        "The original topic of a retried, delayed or dead-lettered copy (sent on through the default exchange)"
    },
    "x-eb-last-error": {
      type: "string",
      description: "The failure that caused the last retry (at most 2,000 characters)"
    },
    "x-eb-dead-reason": { type: "string", description: "Why a message was dead-lettered" },
    "x-eb-group": { type: "string", description: "The group a dead letter belongs to" },
    "x-eb-delay": { type: "string", description: "Milliseconds a delayed publish waits (on its way to a delay queue)" },
    "x-eb-published-at": {
      type: "string",
      description: "Publish time (epoch ms) of a member of a packed message retried or dead-lettered on its own"
    },
    "x-eb-task-key": { type: "string", description: "A task's deduplication key (TaskQueue)" },
    "x-eb-expiration": {
      type: "string",
      description: "Milliseconds the message may wait (transports without a native TTL)"
    }
  }
}

/**
 * Builds the document. Fails with `AsyncApiError` when a payload Schema has no JSON Schema form.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options): Effect.Effect<Document, AsyncApiError> =>
  Effect.suspend(() => {
    const collector = internal.makeSchemaCollector()
    const exchange = {
      name: `${options.prefix ?? "eb"}.topic`,
      type: "topic",
      durable: true,
      autoDelete: false,
      vhost: "/"
    }
    const nats = options.transport === "nats"
    const stream = options.stream ?? "EB"
    const channels: Record<string, JsonValue> = {}
    const operations: Record<string, JsonValue> = {}
    const messages: Record<string, JsonValue> = {}
    const redis = options.transport === "redis"
    const prefix = options.prefix ?? "eb"
    // Redis Streams: the stream key and the entry layout (RedisBroker's) instead of AMQP bindings.
    const redisChannel = (address: string): JsonValue => ({
      stream: `${prefix}:s:${address}`,
      groups: `${prefix}:groups:${address}`,
      fields: "b body, i message id, t publish time (epoch ms), c correlation id, e expiration (ms), " +
        "h:<name> header, m:<name> library metadata, a attempt"
    })

    const schemaOf = (channel: string, ast: AST.AST): Effect.Effect<JsonValue, AsyncApiError> =>
      Effect.try({
        try: () => collector.schemaOf(ast),
        catch: (error) => new AsyncApiError({ channel, detail: describeError(error) })
      })

    /** Which address took each component key: two addresses on one key would overwrite each other. */
    const keyOwners = new Map<string, string>()

    const addChannel = (
      address: string,
      payload: JsonValue,
      extra: {
        readonly description: string
        readonly send: string
        readonly receive: string
        /** AMQP delivery mode of what is sent: 2 persistent, 1 transient. */
        readonly deliveryMode: 1 | 2
        readonly task?: JsonValue
        /** The queue group that consumes (a task's), when it is known. */
        readonly group?: string
      }
    ) => {
      const id = internal.componentKey(address)
      const owner = keyOwners.get(id)
      if (owner !== undefined) {
        return Effect.fail(
          new AsyncApiError({
            channel: address,
            detail: owner === address
              ? "described twice (a topic and a task on one address?)"
              : `its component key "${id}" is also the key of "${owner}": rename one`
          })
        )
      }
      keyOwners.set(id, address)
      messages[id] = {
        name: address,
        title: address,
        contentType: "application/json",
        headers: headersSchema,
        payload
      }
      channels[id] = {
        address,
        description: extra.description,
        messages: { [id]: { $ref: `#/components/messages/${id}` } },
        // NATS has no channel binding fields: the address is the subject.
        ...(nats
          ? {}
          : {
            bindings: redis
              ? { redis: { bindingVersion: "0.1.0" } }
              : { amqp: { is: "routingKey", exchange, bindingVersion: "0.3.0" } }
          }),
        ...(redis ? { "x-eb-redis": redisChannel(address) } : {}),
        ...(extra.task !== undefined ? { "x-eb-task": extra.task } : {})
      }
      const messageRef = { $ref: `#/channels/${id}/messages/${id}` }
      operations[`${id}.send`] = {
        action: "send",
        channel: { $ref: `#/channels/${id}` },
        summary: extra.send,
        messages: [messageRef],
        // Every publish asks for a confirm and `mandatory` (an unroutable message fails the publish);
        // on NATS for JetStream's PubAck from the stream that captures the subject.
        ...(redis
          ? {}
          : {
            bindings: nats
              ? { nats: { bindingVersion: "0.1.0", "x-jetstream-stream": stream } }
              : { amqp: { deliveryMode: extra.deliveryMode, mandatory: true, bindingVersion: "0.3.0" } }
          })
      }
      operations[`${id}.receive`] = {
        action: "receive",
        channel: { $ref: `#/channels/${id}` },
        summary: extra.receive,
        messages: [messageRef],
        // Each group is a durable JetStream pull consumer (competing within the group), not a core
        // NATS queue group, hence extensions rather than `queue`.
        ...(nats
          ? {
            bindings: {
              nats: {
                bindingVersion: "0.1.0",
                "x-jetstream-stream": stream,
                ...(extra.group !== undefined ? { "x-jetstream-consumer": natsDurable(extra.group) } : {})
              }
            }
          }
          : {})
      }
      return Effect.void
    }

    return Effect.gen(function*() {
      for (const topic of options.topics ?? []) {
        if (topic[Broker.TopicTypeId] !== "topic") continue
        const payload = yield* schemaOf(topic.name, topic.schema.ast)
        yield* addChannel(topic.name, payload, {
          description:
            `Topic ${topic.name}: published with confirms, delivered at least once to each subscribed group.`,
          send: `Broker.publish(${topic.name})`,
          receive: `Broker.subscribe(${topic.name})`,
          // The default; a publish may ask for `persistent: false`.
          deliveryMode: 2
        })
      }
      for (const task of options.tasks ?? []) {
        const payload = yield* schemaOf(task.topic.name, task.payload.ast)
        const success = isNothing(task.success.ast) ? undefined : yield* schemaOf(task.topic.name, task.success.ast)
        const failure = isNothing(task.failure.ast) ? undefined : yield* schemaOf(task.topic.name, task.failure.ast)
        yield* addChannel(task.topic.name, payload, {
          description:
            `Task ${task.name}: enqueued on ${task.topic.name}, run by workers sharing the queue group ${task.group}.`,
          send: `TaskQueue.enqueue(${task.name})`,
          receive: `worker for ${task.name}`,
          deliveryMode: task.delivery === "transient" ? 1 : 2,
          group: task.group,
          task: {
            name: task.name,
            group: task.group,
            // `enqueueAll` sends up to 100 tasks per message in this content type (workers unpack it).
            packedContentType: wire.packedContentType,
            ...(success !== undefined ? { success } : {}),
            ...(failure !== undefined ? { failure } : {})
          }
        })
      }
      const schemaComponents = Either.match(collector.components(), {
        onLeft: ({ ids, key }) =>
          Effect.fail(
            new AsyncApiError({
              channel: ids.join(", "),
              detail: `schema identifiers ${
                ids.map((id) => `"${id}"`).join(" and ")
              } both become the component key "${key}": rename one`
            })
          ),
        onRight: Effect.succeed
      })
      const document: Document = {
        asyncapi: "3.0.0",
        info: options.info,
        defaultContentType: "application/json",
        ...(options.servers !== undefined ? { servers: options.servers } : {}),
        channels,
        operations,
        components: { messages, schemas: yield* schemaComponents }
      }
      return document
    })
  })

/**
 * Builds the document from a module's exports: its Topics and Tasks become channels.
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromModule = (
  module: Readonly<Record<string, unknown>>,
  options: Omit<Options, "topics" | "tasks">
): Effect.Effect<Document, AsyncApiError> => make({ ...options, ...collect(Object.values(module)) })
