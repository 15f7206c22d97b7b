"""baseline: the hourglass region proposal network of the EIC paper, its training and its evaluation."""
