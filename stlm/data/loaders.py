"""DataLoaders of a datamodule's splits (Lightning's four dataloader hooks, kept apart from the data logic).

A datamodule that holds ``datasets[split]`` (datasets whose ``__getitems__`` returns a collated batch, see
:mod:`stlm.data.windowing`) and ``batch_size``, ``eval_batch_size`` and ``num_workers`` gets Lightning's four
dataloader hooks from :class:`SplitLoaders`; training batches are shuffled, evaluation batches are not.
"""

from __future__ import annotations

from torch.utils.data import DataLoader

from stlm.data.windowing import collate_batch


class SplitLoaders:
    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size if split == "train" else self.eval_batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=collate_batch,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
