"""``proxyshare bench``: what generality costs, measured, in one run.

Read top-down:
      report     the pydantic models: BenchConfig in, BenchReport out
      run        run_bench(): pools, scenarios, repeats, summaries
      scenarios  each way of sharing a counter: what the workers get
      workers    what runs inside the pool workers (no pydantic, no rich)
      probes     the "what the cost buys" facts, checked in the run
      micro      --micro: one client, one primitive at a time
      targets    the performance targets, reported with their ratios
      verdict    a few plain sentences drawn from a report
      compare    a report against an earlier one (--compare)
      output     the tables (rich) for the CLI
      plot       the picture (matplotlib, optional)

This package's ``__init__`` imports nothing: pool workers import
``proxyshare._bench.workers`` and must not pull in pydantic.
"""
