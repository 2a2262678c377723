"""The explorer in the browser: onnxruntime-web's files (bundle) and the static site (site)."""
