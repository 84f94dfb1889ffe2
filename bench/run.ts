/**
 * `npm run bench -- <suite>`: runs bench/<suite>.ts, which prints `name: value unit` lines.
 */
const suite = process.argv[2]
if (suite === undefined || !/^[a-z0-9-]+$/.test(suite)) {
  process.stderr.write(
    "usage: npm run bench -- <suite>   (broker | tasks | scheduler | outbox | inbox | nats | nats-pack | redis | front)\n"
  )
  process.exit(2)
}
await import(`./${suite}.ts`)
