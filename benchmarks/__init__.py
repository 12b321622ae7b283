"""Speed and memory benchmarks (``python -m benchmarks``). An entry point: importing the
package registers core's built-in kinds and the plug-ins (``core.startup``), so every
``python -m benchmarks.<name>`` finds the demo models and reads recipes."""
from core.ground.memory import keep_freed_memory
from core.startup import register_all

register_all()
keep_freed_memory()  # as the app and the CLI do: figures measure the allocator they run with
