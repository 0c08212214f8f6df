"""Conversion between our parameter trees and Hugging Face checkpoints."""
