/**
 * @since 0.1.0
 */
export * as AsyncApi from "./AsyncApi.js"

/**
 * @since 0.1.0
 */
export * as Broker from "./Broker.js"

/**
 * @since 0.1.0
 */
export * as BrokerError from "./BrokerError.js"

/**
 * @since 0.1.0
 */
export * as BrokerTransport from "./BrokerTransport.js"

/**
 * @since 0.1.0
 */
export * as Health from "./Health.js"

/**
 * @since 0.1.0
 */
export * as Inbox from "./Inbox.js"

/**
 * @since 0.1.0
 */
export * as InvalidOptions from "./InvalidOptions.js"

/**
 * @since 0.1.0
 */
export * as MemoryBroker from "./layers/MemoryBroker.js"

/**
 * @since 0.1.0
 */
export * as Outbox from "./Outbox.js"

/**
 * @since 0.1.0
 */
export * as OutboxError from "./OutboxError.js"

/**
 * @since 0.1.0
 */
export * as OutboxStore from "./OutboxStore.js"

/**
 * @since 0.1.0
 */
export * as ResultStore from "./ResultStore.js"

/**
 * @since 0.1.0
 */
export * as Scheduler from "./Scheduler.js"

/**
 * @since 0.1.0
 */
export * as SchedulerError from "./SchedulerError.js"

/**
 * @since 0.1.0
 */
export * as SchedulerLease from "./SchedulerLease.js"

/**
 * @since 0.1.0
 */
export * as Task from "./Task.js"

/**
 * @since 0.1.0
 */
export * as TaskError from "./TaskError.js"

/**
 * @since 0.1.0
 */
export * as TaskQueue from "./TaskQueue.js"

/**
 * @since 0.1.0
 */
export * as Trigger from "./Trigger.js"
