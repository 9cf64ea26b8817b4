"""The demo from Python: x4 super-resolution (the default model) on the bundled clip, dense vs delta (same as
`deltajax demo`)."""

from deltajax import demo

report = demo.run(demo.parse_args(["--frames", "30", "--out", "deltajax_demo"]))
print(demo.format_report(report))
