/**
 * Infrastructure chosen from the environment: with no `DATABASE_URL` / `RABBITMQ_URL` / `NATS_URL` /
 * `REDIS_URL` the example needs no servers (embedded PostgreSQL through PGlite, the in-memory
 * broker); with them it uses the real ones (`NATS_URL`, then `RABBITMQ_URL`, then `REDIS_URL` when
 * several broker URLs are set).
 */
import { Reactivity } from "@effect/experimental"
import { SqlClient } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import type { Redacted } from "effect"
import { Config, Context, Effect, Layer, Option } from "effect"
import type { Broker } from "effect-background"
import { type InvalidOptions, MemoryBroker } from "effect-background"
import * as NatsBroker from "effect-background/layers/NatsBroker"
import * as PgliteClient from "effect-background/layers/PgliteClient"
import * as RabbitMQBroker from "effect-background/layers/RabbitMQBroker"
import * as RedisBroker from "effect-background/layers/RedisBroker"

export interface Environment {
  readonly databaseUrl: Option.Option<Redacted.Redacted>
  readonly rabbitmqUrl: Option.Option<Redacted.Redacted>
  readonly natsUrl: Option.Option<Redacted.Redacted>
  readonly redisUrl: Option.Option<Redacted.Redacted>
  readonly port: number | undefined
}

export const environment: Config.Config<Environment> = Config.all({
  databaseUrl: Config.option(Config.redacted("DATABASE_URL")),
  rabbitmqUrl: Config.option(Config.redacted("RABBITMQ_URL")),
  natsUrl: Config.option(Config.redacted("NATS_URL")),
  redisUrl: Config.option(Config.redacted("REDIS_URL")),
  port: Config.integer("PORT").pipe(Config.option, Config.map(Option.getOrUndefined))
})

/** Whether the outbox can LISTEN on a real server connection (PGlite is in-process). */
export class Embedded
  extends Context.Tag("orders/Embedded")<Embedded, { readonly database: boolean; readonly broker: boolean }>()
{}

const pglite = Layer.scopedContext(
  Effect.map(
    PgliteClient.make(),
    (client) => Context.make(SqlClient.SqlClient, client).pipe(Context.add(PgliteClient.PgliteClient, client))
  )
).pipe(Layer.provide(Reactivity.layer))

export const Infrastructure = Layer.unwrapEffect(Effect.map(environment, (env) => {
  const database = Option.match(env.databaseUrl, {
    onNone: () => pglite,
    onSome: (url) => PgClient.layer({ url, applicationName: "eb-orders-example" })
  })
  const rabbitmq: Layer.Layer<Broker.Broker, Broker.BrokerUnavailable | InvalidOptions.InvalidOptions> = Option.match(
    env.rabbitmqUrl,
    {
      onNone: () =>
        Option.match(env.redisUrl, {
          onNone: () => MemoryBroker.layer(),
          onSome: (url) => RedisBroker.layer({ url, prefix: "eb_orders" })
        }),
      onSome: (url) => RabbitMQBroker.layer({ url, prefix: "eb_orders" })
    }
  )
  const broker: Layer.Layer<
    Broker.Broker,
    Broker.BrokerUnavailable | Broker.DeclareConflict | InvalidOptions.InvalidOptions
  > = Option.match(env.natsUrl, {
    onNone: () => rabbitmq,
    onSome: (url) => NatsBroker.layer({ url, stream: "EB_ORDERS" })
  })
  const embedded = Layer.succeed(Embedded, {
    database: Option.isNone(env.databaseUrl),
    broker: Option.isNone(env.rabbitmqUrl) && Option.isNone(env.natsUrl) && Option.isNone(env.redisUrl)
  })
  return Layer.mergeAll(database, broker, embedded)
}))
