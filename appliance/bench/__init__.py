"""`appliance bench`: how close the pipeline runs to this box's limit, and capacity planning.

Every figure is measured in one run on the same model, source and box, so that ratios between
them hold even on a noisy shared machine.
"""
