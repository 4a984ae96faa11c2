import sys, os, shutil; sys.path.insert(0,'tests')
from pathlib import Path
from grid_support import make_plan, FAKE_TRAIN
from replicate.experiments.planfile import read_plan
from replicate.experiments.slurm import submit_plan, make_executor
shutil.rmtree('/tmp/g3', ignore_errors=True); Path('/tmp/g3/sb').mkdir(parents=True)
os.environ['PATH']='/tmp/fakebin:'+os.environ['PATH']; os.environ['FAKE_SLURM_DIR']='/tmp/g3/sb'
p = make_plan(Path('/tmp/g3'), [('t1','b'),('b',None),('c',None),('t2','b'),('t3','t1')])
plan = read_plan(p)
ex = make_executor(plan, partition='gpu', time_min=4320, array_parallelism=2)
jobs = submit_plan(plan, ex)
print(jobs)
