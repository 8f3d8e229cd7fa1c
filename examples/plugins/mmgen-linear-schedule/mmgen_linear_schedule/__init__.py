"""mmgen-linear-schedule: a `linear_schedule` sampler and a `distinct_outputs` metric for mmgen.

The `mmgen` entry point names `mmgen_linear_schedule.plugin`; importing this
package imports nothing heavy.
"""

__version__ = "0.1.0"
