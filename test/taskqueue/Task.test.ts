import { assert, describe, it } from "@effect/vitest"
import { Duration, Schedule, Schema } from "effect"
import * as Broker from "../../src/Broker.js"
import * as Task from "../../src/Task.js"

const payload = Schema.Struct({ id: Schema.String })

describe("Task definitions", () => {
  it("a task rides on topic and group tasks.<name>", () => {
    const task = Task.make("send_welcome_email", { payload })
    assert.strictEqual(task.name, "send_welcome_email")
    assert.strictEqual(task.topic.name, "tasks.send_welcome_email")
    assert.strictEqual(task.group, "tasks.send_welcome_email")
    assert.isTrue(Task.isTask(task))
    assert.isFalse(Task.isTask({ name: "x" }))
  })

  it("a name that cannot be a routing key is refused at definition", () => {
    assert.throws(() => Task.make("bad..name", { payload }), Broker.InvalidName)
    assert.throws(() => Task.make("wild.*", { payload }), Broker.InvalidName)
    assert.throws(() => Task.make("", { payload }), Broker.InvalidName)
  })

  it("a non-positive timeout or an out-of-range maxPriority is refused", () => {
    assert.throws(() => Task.make("t", { payload, timeout: 0 }), RangeError)
    assert.throws(() => Task.make("t", { payload, timeout: "-1 second" }), RangeError)
    assert.throws(() => Task.make("t", { payload, maxPriority: 256 }), RangeError)
    assert.throws(() => Task.make("t", { payload, delivery: "fast" as Task.Delivery }), RangeError)
  })

  it("combinators return new definitions and leave the original alone", () => {
    const base = Task.make("t", { payload })
    const changed = base.pipe(Task.withTimeout("5 seconds"), Task.withRetry(Schedule.recurs(2)))
    assert.strictEqual(base.timeout, undefined)
    assert.strictEqual(Task.timeoutMillis(changed), 5000)
    assert.notStrictEqual(changed.retry, base.retry)
    assert.strictEqual(changed.name, "t")
    assert.isTrue(Task.isTask(changed))
    assert.isTrue(Duration.equals(Task.withTimeout(base, 1000).timeout ?? Duration.zero, Duration.seconds(1)))
  })
})
