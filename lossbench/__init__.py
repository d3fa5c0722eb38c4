"""lossbench: which loss, regularizer and augmentation should I use?"""
__version__ = "0.1.0"
