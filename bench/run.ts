/**
 * `npm run bench -- <suite>`: runs bench/<suite>.ts, which prints `name: value unit` lines. The
 * suites run compiled by tsc (`tsconfig.bench.json`), as users run the library's dist: a loader
 * such as tsx wraps every named closure to set its name, which the hot paths would pay per message.
 */
const suite = process.argv[2]
if (suite === undefined || !/^[a-z0-9-]+$/.test(suite)) {
  process.stderr.write(
    "usage: npm run bench -- <suite>   (broker | tasks | scheduler | outbox | inbox | nats | nats-pack | redis | front | soak | soak-outbox)\n"
  )
  process.exit(2)
}
await import(`./${suite}.js`)
