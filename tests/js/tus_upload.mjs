// Uploads one file with tus-js-client, for the pytest suite (driven by tests/js_clients.py).
//
//   node tus_upload.mjs --endpoint URL --file PATH [--token JWT] [--chunk-size BYTES]
//     [--parallel N] [--metadata key=value ...] [--stop-after BYTES] [--store PATH]
//
// Prints one JSON line on stdout and exits with:
//   0  {"url", "bytes", "acknowledged"}         the upload is complete
//   1  {"error", "status"?}                     tus-js-client gave up (status: last HTTP status)
//   2  {"error"}                                bad command line
//   3  {"stopped": true, "url", "acknowledged"} --stop-after took effect
// "acknowledged" is the sum over upload URLs of the highest Upload-Offset the server sent
// back (HEAD or PATCH) in this run: for a sequential upload, the server's last offset.
import { createReadStream, statSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { FileUrlStorage, Upload } from 'tus-js-client'

function finish(code, result) {
  process.stdout.write(`${JSON.stringify(result)}\n`)
  process.exitCode = code
  // Let pending work (e.g. a FileUrlStorage write) end by itself, but do not hang on it.
  setTimeout(() => process.exit(code), 5000).unref()
}

function parseCommandLine() {
  const { values } = parseArgs({
    options: {
      endpoint: { type: 'string' },
      file: { type: 'string' },
      token: { type: 'string' },
      'chunk-size': { type: 'string' },
      parallel: { type: 'string' },
      metadata: { type: 'string', multiple: true, default: [] },
      'stop-after': { type: 'string' },
      store: { type: 'string' },
    },
    strict: true,
  })
  if (!values.endpoint || !values.file) throw new Error('--endpoint and --file are required')
  const count = (name) => {
    if (values[name] === undefined) return undefined
    const n = Number(values[name])
    if (!Number.isSafeInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer`)
    return n
  }
  const metadata = {}
  for (const pair of values.metadata) {
    const eq = pair.indexOf('=')
    if (eq < 1) throw new Error(`--metadata needs key=value, got ${JSON.stringify(pair)}`)
    metadata[pair.slice(0, eq)] = pair.slice(eq + 1)
  }
  return {
    ...values,
    chunkSize: count('chunk-size'),
    parallel: count('parallel'),
    stopAfter: count('stop-after'),
    metadata,
  }
}

async function main() {
  let args
  try {
    args = parseCommandLine()
  } catch (err) {
    finish(2, { error: err.message })
    return
  }
  const total = statSync(args.file).size
  // Upload URL -> highest Upload-Offset the server reported for it.
  const offsets = new Map()
  const acknowledged = () => [...offsets.values()].reduce((a, b) => a + b, 0)
  let stopRequested = false
  let done = false

  const options = {
    endpoint: args.endpoint,
    metadata: args.metadata,
    retryDelays: [0, 500, 1000],
    headers: args.token ? { Authorization: `JWT ${args.token}` } : {},
    onAfterResponse(req, res) {
      const offset = Number.parseInt(res.getHeader('Upload-Offset'), 10)
      const method = req.getMethod()
      const status = res.getStatus()
      if ((method === 'HEAD' || method === 'PATCH') && status < 300 && !Number.isNaN(offset)) {
        offsets.set(req.getURL(), Math.max(offsets.get(req.getURL()) ?? 0, offset))
      }
    },
    onProgress(bytesSent) {
      // bytesSent counts bytes handed to the socket, not bytes the server has stored.
      if (args.stopAfter !== undefined && bytesSent >= args.stopAfter) stopRequested = true
    },
    onChunkComplete(_chunkSize, bytesAccepted, bytesTotal) {
      // Stop only at a chunk boundary, so the server has acknowledged everything sent. With
      // parallel uploads these numbers are per part; abort() then also cuts off the other
      // parts' PATCH requests mid-body. The last chunk completes the upload: no stop then.
      if (!stopRequested || done || bytesAccepted === bytesTotal) return
      done = true
      // Without terminate (no DELETE): the upload stays on the server and in the store.
      upload.abort(false)
      finish(3, { stopped: true, url: upload.url, acknowledged: acknowledged() })
    },
    onSuccess() {
      if (done) return
      done = true
      finish(0, { url: upload.url, bytes: total, acknowledged: acknowledged() })
    },
    onError(err) {
      if (done) return
      done = true
      const status = err.originalResponse?.getStatus()
      finish(1, status === undefined ? { error: err.message } : { error: err.message, status })
    },
  }
  if (args.chunkSize !== undefined) options.chunkSize = args.chunkSize
  if (args.parallel !== undefined) options.parallelUploads = args.parallel
  // Without a urlStorage, the Node build of tus-js-client stores nothing (NoopUrlStorage).
  if (args.store) options.urlStorage = new FileUrlStorage(args.store)

  // An fs.ReadStream with a path is read as a file source: tus-js-client stats the path for
  // the size, opens a new ReadStream per chunk at its offset, and fingerprints the file
  // by absolute path, size, mtime and endpoint (which is what --store keys on).
  const upload = new Upload(createReadStream(args.file), options)

  if (args.store) {
    const previous = await upload.findPreviousUploads()
    // Oldest stored entry first; resuming sends HEAD to it (a 4xx there makes tus-js-client
    // drop the entry and create a new upload).
    if (previous.length > 0) upload.resumeFromPreviousUpload(previous[0])
  }
  upload.start()
}

main().catch((err) => finish(1, { error: err.message }))
