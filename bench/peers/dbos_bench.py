"""The DBOS side of `cortex-bench workflows`: the same workflows as DBOS
workflows of durable steps of nothing (DBOS checkpoints each step's result
in its system database, SQLite here, before the workflow goes on), run and
timed in this process. Prints one JSON object of seconds.

    python dbos_bench.py SYSTEM_DB RUNS CONCURRENT DAG_TASKS
"""

import asyncio
import json
import sys
import time

from dbos import DBOS


@DBOS.step()
def nothing():
    return None


@DBOS.workflow()
def seq(n):
    for _ in range(n):
        nothing()
    return n


@DBOS.step()
async def nothing_async():
    return None


@DBOS.workflow()
async def fanout(n):
    await nothing_async()
    await asyncio.gather(*[nothing_async() for _ in range(n)])
    await nothing_async()
    return n


def main():
    db, runs, concurrent, dag = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    DBOS(config={"name": "cortex-bench", "system_database_url": f"sqlite:///{db}"})
    DBOS.launch()
    seq(10)  # warm-up
    latencies = []
    for _ in range(runs):
        started = time.perf_counter()
        seq(10)
        latencies.append(time.perf_counter() - started)
    started = time.perf_counter()
    handles = [DBOS.start_workflow(seq, 10) for _ in range(concurrent)]
    for handle in handles:
        handle.get_result()
    throughput = time.perf_counter() - started
    dag_seconds = None
    dag_error = None
    if dag > 0:
        try:
            started = time.perf_counter()
            asyncio.run(fanout(dag))
            dag_seconds = time.perf_counter() - started
        except Exception as e:  # reported, not hidden
            dag_error = f"{type(e).__name__}: {e}"
    print(json.dumps({
        "latencies": latencies,
        "concurrent_seconds": throughput,
        "dag_seconds": dag_seconds,
        "dag_error": dag_error,
    }))
    DBOS.destroy()


if __name__ == "__main__":
    main()
