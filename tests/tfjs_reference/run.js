// Run a TF.js graph model from disk on the pure-JS CPU backend; the reference that
// tests/test_tfjs.py compares the torch conversion with.
//
// usage: node run.js REQUEST.json
// REQUEST: {"model": "x.json", "weights": ["x.bin"], "input": {"name": "input_1", "file": "in.f32",
//           "shape": [n, ...]}, "outputs": ["Identity", ...], "out_dir": "dir"}
// Writes out_dir/<k>.f32 (little-endian float32) and out_dir/outputs.json with the shapes.
const fs = require("fs");
const path = require("path");
const tf = require("@tensorflow/tfjs");

function fromDisk(modelPath, weightPaths) {
  return {
    load: async () => {
      const spec = JSON.parse(fs.readFileSync(modelPath, "utf8"));
      const buffers = weightPaths.map((p) => fs.readFileSync(p));
      const all = Buffer.concat(buffers);
      const weightData = all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength);
      return {
        modelTopology: spec.modelTopology,
        weightSpecs: spec.weightsManifest.flatMap((g) => g.weights),
        weightData,
        format: spec.format,
        generatedBy: spec.generatedBy,
        convertedBy: spec.convertedBy,
        signature: spec.signature,
        userDefinedMetadata: spec.userDefinedMetadata,
      };
    },
  };
}

async function main() {
  const request = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
  await tf.setBackend("cpu");
  const model = await tf.loadGraphModel(fromDisk(request.model, request.weights));
  const raw = fs.readFileSync(request.input.file);
  const data = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
  const input = tf.tensor(data, request.input.shape, "float32");
  // One photo per call: most of these graphs fix the batch at 1.
  const perImage = [];
  for (let i = 0; i < request.input.shape[0]; i++) {
    const feed = {};
    feed[request.input.name] = input.slice(i, 1);
    const out = model.execute(feed, request.outputs);
    perImage.push(Array.isArray(out) ? out : [out]);
  }
  const results = request.outputs.map((_, k) => tf.concat(perImage.map((outs) => outs[k]), 0));
  const shapes = {};
  fs.mkdirSync(request.out_dir, { recursive: true });
  for (let k = 0; k < results.length; k++) {
    const values = results[k].dataSync();
    fs.writeFileSync(path.join(request.out_dir, `${k}.f32`), Buffer.from(new Float32Array(values).buffer));
    shapes[request.outputs[k]] = { file: `${k}.f32`, shape: results[k].shape };
  }
  fs.writeFileSync(path.join(request.out_dir, "outputs.json"), JSON.stringify({ backend: tf.getBackend(), version: tf.version.tfjs, outputs: shapes }));
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : String(err));
  process.exit(1);
});
